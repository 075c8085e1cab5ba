/* Extended attributes by path, without following a symlink, and by
 * descriptor, with the errors Linux gives. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

static void show(const char *what, long r)
{
	if (r < 0)
		printf("%-40s -> -1 %s\n", what, strerror(errno));
	else
		printf("%-40s -> %ld\n", what, r);
}

int main(void)
{
	char buf[64];
	int fd = open("xa.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
	unlink("xa.link");
	symlink("xa.txt", "xa.link");
	show("setxattr user.a", setxattr("xa.txt", "user.a", "alpha", 5, 0));
	show("setxattr create again", setxattr("xa.txt", "user.a", "x", 1, XATTR_CREATE));
	show("setxattr replace missing", setxattr("xa.txt", "user.b", "x", 1, XATTR_REPLACE));
	show("fsetxattr user.b", fsetxattr(fd, "user.b", "", 0, 0));
	show("getxattr size", getxattr("xa.link", "user.a", NULL, 0));
	long n = getxattr("xa.txt", "user.a", buf, sizeof buf);
	show("getxattr", n);
	printf("value %.*s\n", (int)(n > 0 ? n : 0), buf);
	show("getxattr small", getxattr("xa.txt", "user.a", buf, 2));
	show("lgetxattr on the link", lgetxattr("xa.link", "user.a", buf, sizeof buf));
	show("fgetxattr empty value", fgetxattr(fd, "user.b", buf, sizeof buf));
	show("getxattr missing", getxattr("xa.txt", "user.zz", buf, sizeof buf));
	show("getxattr empty name", getxattr("xa.txt", "", buf, sizeof buf));
	show("getxattr no file", getxattr("nope", "user.a", buf, sizeof buf));
	show("getxattr bad pointer", getxattr((char *)8, "user.a", buf, sizeof buf));
	show("setxattr bad flags", setxattr("xa.txt", "user.c", "x", 1, 4));
	show("listxattr size", listxattr("xa.txt", NULL, 0));
	n = flistxattr(fd, buf, sizeof buf);
	show("flistxattr", n);
	for (char *p = buf; n > 0 && p < buf + n; p += strlen(p) + 1)
		printf("name %s\n", p);
	show("removexattr", removexattr("xa.txt", "user.a"));
	show("fremovexattr", fremovexattr(fd, "user.b"));
	show("lremovexattr missing", lremovexattr("xa.link", "user.a"));
	show("fgetxattr bad fd", fgetxattr(99, "user.a", buf, sizeof buf));
	close(fd);
	unlink("xa.link");
	unlink("xa.txt");
	return 0;
}
