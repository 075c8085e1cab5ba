/* A dynamically linked program: its arguments, environment and what the
 * auxiliary vector tells it about itself and its loader. Prints only what
 * is the same in every run. */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

static int count_objects(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    int *n = data;
    const char *name = info->dlpi_name;
    const char *slash = strrchr(name, '/');
    /* The vDSO's own headers are the kernel's business. */
    /* glibc names it linux-vdso.so.1, musl leaves it unnamed (its main
     * program is named, glibc's is the first object, unnamed). */
    if (strstr(name, "vdso") || (*n > 0 && !*name)) {
        printf("object %d: a vDSO\n", (*n)++);
        return 0;
    }
    printf("object %d: %s, %d program headers\n", (*n)++, slash ? slash + 1 : (*name ? name : "(main)"),
           info->dlpi_phnum);
    return 0;
}

int main(int argc, char **argv) {
    printf("hello from a dynamic program, argc %d\n", argc);
    for (int i = 1; i < argc; i++) printf("argv[%d] = %s\n", i, argv[i]);
    const char *v = getenv("DYN_TEST");
    printf("DYN_TEST=%s\n", v ? v : "(unset)");
    printf("AT_BASE set: %d\n", getauxval(AT_BASE) != 0);
    printf("AT_SECURE: %lu\n", getauxval(AT_SECURE));
    printf("AT_PAGESZ: %lu\n", getauxval(AT_PAGESZ));
    printf("AT_PHENT: %lu\n", getauxval(AT_PHENT));
    printf("AT_ENTRY is main's program: %d\n", getauxval(AT_ENTRY) != 0);
    printf("AT_EXECFN ends in hello: %d\n", strstr((char *)getauxval(AT_EXECFN), "hello") != NULL);
    printf("AT_SYSINFO_EHDR set: %d\n", getauxval(AT_SYSINFO_EHDR) != 0);
    printf("AT_RANDOM set: %d\n", getauxval(AT_RANDOM) != 0);
    /* The program headers AT_PHDR points at describe this program. */
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)getauxval(AT_PHDR);
    int loads = 0;
    for (unsigned long i = 0; i < getauxval(AT_PHNUM); i++) loads += ph[i].p_type == PT_LOAD;
    printf("PT_LOAD segments: %d\n", loads);
    int n = 0;
    dl_iterate_phdr(count_objects, &n);
    /* brk and malloc work beside the loaded libraries. */
    char *big = malloc(10 << 20);
    memset(big, 7, 10 << 20);
    char *small = malloc(100);
    strcpy(small, "heap ok");
    printf("%s %d\n", small, big[(10 << 20) - 1]);
    free(big);
    free(small);
    return 3;
}
