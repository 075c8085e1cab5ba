/* Walks the vDSO the way a dynamic loader does (AT_SYSINFO_EHDR, PT_LOAD,
 * PT_DYNAMIC, the SysV hash, DT_VERSYM and DT_VERDEF), finds each function
 * Linux's x86-64 vDSO exports at LINUX_2.6, calls it, and checks it
 * against the system call. Prints only what must be the same on Linux
 * and in a job. */
#define _GNU_SOURCE
#include <elf.h>
#include <link.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static unsigned long elf_hash(const char *s) {
    unsigned long h = 0, g;
    while (*s) {
        h = (h << 4) + (unsigned char)*s++;
        g = h & 0xf0000000;
        if (g)
            h ^= g >> 24;
        h &= ~g;
    }
    return h;
}

static uintptr_t base;
static const char *strtab;
static const Elf64_Sym *symtab;
static const Elf32_Word *hash;
static const Elf64_Half *versym;
static const Elf64_Verdef *verdef;

/* The version index of `name` among the definitions (-1: none). */
static int version_index(const char *name) {
    const Elf64_Verdef *d = verdef;
    for (;;) {
        const Elf64_Verdaux *aux = (const void *)((const char *)d + d->vd_aux);
        if (!(d->vd_flags & VER_FLG_BASE) && d->vd_hash == elf_hash(name) && !strcmp(strtab + aux->vda_name, name))
            return d->vd_ndx & 0x7fff;
        if (!d->vd_next)
            return -1;
        d = (const void *)((const char *)d + d->vd_next);
    }
}

/* name@version through the hash chain, as glibc's and Go's lookups go. */
static void *lookup(const char *name, const char *version) {
    int want = version_index(version);
    Elf32_Word nbucket = hash[0];
    const Elf32_Word *bucket = hash + 2, *chain = hash + 2 + nbucket;
    for (Elf32_Word i = bucket[elf_hash(name) % nbucket]; i; i = chain[i]) {
        const Elf64_Sym *s = &symtab[i];
        int type = ELF64_ST_TYPE(s->st_info), bind = ELF64_ST_BIND(s->st_info);
        if (type != STT_FUNC || (bind != STB_GLOBAL && bind != STB_WEAK) || s->st_shndx == SHN_UNDEF)
            continue;
        if (strcmp(strtab + s->st_name, name) || (versym[i] & 0x7fff) != want)
            continue;
        return (void *)(base + s->st_value);
    }
    return 0;
}

/* The C library's own calls, many times: with its vDSO lookups working,
 * none of them is a system call (the test counts them in a trace). */
static int libc_calls(void) {
    struct timespec ts;
    struct timeval tv;
    long sum = 0;
    for (int i = 0; i < 200; i++) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        clock_gettime(CLOCK_REALTIME, &ts);
        gettimeofday(&tv, 0);
        sum += time(0) > 0;
        sum += sched_getcpu() >= 0;
    }
    printf("libc calls: %ld\n", sum);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "libc"))
        return libc_calls();
    const Elf64_Ehdr *eh = (const void *)getauxval(AT_SYSINFO_EHDR);
    if (!eh) {
        puts("no vDSO");
        return 1;
    }
    printf("elf: %d, type DYN: %d\n", !memcmp(eh->e_ident, ELFMAG, SELFMAG), eh->e_type == ET_DYN);
    const Elf64_Phdr *ph = (const void *)((const char *)eh + eh->e_phoff);
    const Elf64_Dyn *dyn = 0;
    int loads = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && !loads++)
            base = (uintptr_t)eh + ph[i].p_offset - ph[i].p_vaddr;
        if (ph[i].p_type == PT_DYNAMIC)
            dyn = (const void *)((const char *)eh + ph[i].p_offset);
    }
    int verdefnum = 0;
    const char *soname = 0;
    for (; dyn && dyn->d_tag != DT_NULL; dyn++) {
        const void *p = (const void *)(base + dyn->d_un.d_ptr);
        switch (dyn->d_tag) {
        case DT_STRTAB: strtab = p; break;
        case DT_SYMTAB: symtab = p; break;
        case DT_HASH: hash = p; break;
        case DT_VERSYM: versym = p; break;
        case DT_VERDEF: verdef = p; break;
        case DT_VERDEFNUM: verdefnum = dyn->d_un.d_val; break;
        case DT_SONAME: soname = (const char *)dyn->d_un.d_val; break;
        }
    }
    printf("tables: strtab %d symtab %d hash %d versym %d verdef %d (%d definitions)\n", !!strtab, !!symtab, !!hash,
           !!versym, !!verdef, verdefnum);
    if (!strtab || !symtab || !hash || !versym || !verdef)
        return 1;
    printf("soname: %s\n", strtab + (uintptr_t)soname);
    const Elf64_Verdaux *aux = (const void *)((const char *)verdef + verdef->vd_aux);
    printf("base definition: %s (flags %d, index %d)\n", strtab + aux->vda_name, verdef->vd_flags, verdef->vd_ndx);
    printf("LINUX_2.6 index: %d\n", version_index("LINUX_2.6"));

    const char *names[] = {"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu",
                           "__vdso_clock_getres", "clock_gettime", "gettimeofday", "time", "getcpu", "clock_getres"};
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++)
        printf("%s@LINUX_2.6: %s\n", names[i], lookup(names[i], "LINUX_2.6") ? "found" : "missing");
    printf("__vdso_clock_gettime@LINUX_2.5: %s\n", lookup("__vdso_clock_gettime", "LINUX_2.5") ? "found" : "missing");

    int (*cg)(clockid_t, struct timespec *) = lookup("__vdso_clock_gettime", "LINUX_2.6");
    int (*gtod)(struct timeval *, void *) = lookup("__vdso_gettimeofday", "LINUX_2.6");
    time_t (*tm)(time_t *) = lookup("__vdso_time", "LINUX_2.6");
    long (*gc)(unsigned *, unsigned *, void *) = lookup("__vdso_getcpu", "LINUX_2.6");
    int (*gr)(clockid_t, struct timespec *) = lookup("__vdso_clock_getres", "LINUX_2.6");
    if (!cg || !gtod || !tm || !gc || !gr)
        return 1;

    clockid_t clocks[] = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_BOOTTIME,
                          CLOCK_REALTIME_COARSE, CLOCK_MONOTONIC_COARSE, CLOCK_PROCESS_CPUTIME_ID};
    for (unsigned i = 0; i < sizeof clocks / sizeof *clocks; i++) {
        struct timespec a, b, c;
        syscall(SYS_clock_gettime, clocks[i], &a);
        int r = cg(clocks[i], &b);
        syscall(SYS_clock_gettime, clocks[i], &c);
        long long na = a.tv_sec * 1000000000LL + a.tv_nsec, nb = b.tv_sec * 1000000000LL + b.tv_nsec,
                  nc = c.tv_sec * 1000000000LL + c.tv_nsec;
        /* Coarse clocks may lag the precise reading by a tick. */
        long long slack = (clocks[i] == CLOCK_REALTIME_COARSE || clocks[i] == CLOCK_MONOTONIC_COARSE) ? 20000000 : 0;
        printf("clock %d: vdso %d, between the system calls %d\n", clocks[i], r, na - slack <= nb && nb <= nc + slack);
        struct timespec r1 = {-1, -1}, r2 = {-2, -2};
        int e1 = syscall(SYS_clock_getres, clocks[i], &r1), e2 = gr(clocks[i], &r2);
        printf("clock %d: getres same %d\n", clocks[i], e1 == e2 && r1.tv_sec == r2.tv_sec && r1.tv_nsec == r2.tv_nsec);
    }
    struct timespec bad;
    printf("clock 12345: vdso %d (-EINVAL %d)\n", cg(12345, &bad), -22);
    struct timeval tv1, tv2;
    syscall(SYS_gettimeofday, &tv1, 0);
    gtod(&tv2, 0);
    printf("gettimeofday: close %d\n", tv2.tv_sec - tv1.tv_sec <= 1 && tv2.tv_sec >= tv1.tv_sec);
    time_t t0 = syscall(SYS_time, 0), t1 = 0, t2 = tm(&t1);
    printf("time: close %d, stored %d\n", t2 - t0 <= 1 && t2 >= t0, t1 == t2);
    unsigned cpu = 99, node = 99, scpu = 98, snode = 98;
    long r = gc(&cpu, &node, 0);
    syscall(SYS_getcpu, &scpu, &snode, 0);
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    printf("getcpu: %ld, cpu allowed %d, node same %d\n", r, !!CPU_ISSET(cpu, &set), node == snode);
    printf("getcpu(NULL, NULL): %ld\n", gc(0, 0, 0));
    return 0;
}
