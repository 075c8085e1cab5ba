/* Sockets: TCP between two threads, UDP, a socketpair passing a
 * descriptor (SCM_RIGHTS), options and names. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int port;

static void *server(void *arg)
{
	int ls = *(int *)arg;
	struct sockaddr_in peer;
	socklen_t len = sizeof peer;
	int c = accept(ls, (struct sockaddr *)&peer, &len);
	char buf[64] = { 0 };
	ssize_t n = recv(c, buf, sizeof buf - 1, 0);
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] >= 'a' && buf[i] <= 'z')
			buf[i] -= 32;
	send(c, buf, n, 0);
	close(c);
	printf("server: peer is loopback: %d, len %u\n", peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK), len);
	return NULL;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1, got = 0;
	socklen_t olen = sizeof got;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	getsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &got, &olen);
	printf("SO_REUSEADDR: %d (%u bytes)\n", got != 0, olen);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	printf("bind: %d\n", bind(ls, (struct sockaddr *)&a, sizeof a));
	socklen_t alen = sizeof a;
	getsockname(ls, (struct sockaddr *)&a, &alen);
	port = ntohs(a.sin_port);
	printf("listen: %d, got a port: %d\n", listen(ls, 4), port > 0);
	pthread_t t;
	pthread_create(&t, NULL, server, &ls);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	printf("connect: %d\n", connect(c, (struct sockaddr *)&a, sizeof a));
	struct sockaddr_in p;
	socklen_t plen = sizeof p;
	getpeername(c, (struct sockaddr *)&p, &plen);
	printf("peer port matches: %d\n", ntohs(p.sin_port) == port);
	write(c, "hello tcp", 9);
	char buf[64] = { 0 };
	ssize_t n = read(c, buf, sizeof buf - 1);
	printf("client got %zd: %s\n", n, buf);
	pthread_join(t, NULL);
	printf("after close: read %zd\n", read(c, buf, sizeof buf));
	close(c);
	close(ls);

	int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in ua = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bind(u2, (struct sockaddr *)&ua, sizeof ua);
	socklen_t ualen = sizeof ua;
	getsockname(u2, (struct sockaddr *)&ua, &ualen);
	sendto(u1, "datagram", 8, 0, (struct sockaddr *)&ua, sizeof ua);
	struct sockaddr_in from;
	socklen_t flen = sizeof from;
	memset(buf, 0, sizeof buf);
	n = recvfrom(u2, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
	printf("udp got %zd: %s from loopback: %d\n", n, buf, from.sin_addr.s_addr == htonl(INADDR_LOOPBACK));

	int sv[2];
	printf("socketpair: %d\n", socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	int pipefd[2];
	pipe(pipefd);
	write(pipefd[1], "through a passed fd", 19);
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { "x", 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &pipefd[0], sizeof(int));
	printf("sendmsg: %zd\n", sendmsg(sv[0], &m, 0));
	char one_byte;
	struct iovec riov = { &one_byte, 1 };
	char rcbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr r = { .msg_iov = &riov, .msg_iovlen = 1, .msg_control = rcbuf, .msg_controllen = sizeof rcbuf };
	printf("recvmsg: %zd\n", recvmsg(sv[1], &r, 0));
	struct cmsghdr *rc = CMSG_FIRSTHDR(&r);
	int passed = -1;
	if (rc && rc->cmsg_type == SCM_RIGHTS)
		memcpy(&passed, CMSG_DATA(rc), sizeof(int));
	memset(buf, 0, sizeof buf);
	n = read(passed, buf, sizeof buf - 1);
	printf("read through the passed descriptor: %zd: %s\n", n, buf);
	printf("shutdown: %d\n", shutdown(sv[0], SHUT_WR));
	printf("read after peer shutdown: %zd\n", read(sv[1], buf, 1));
	return 0;
}
