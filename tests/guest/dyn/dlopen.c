/* dlopen at run time: libm, the libpthread stub, a missing library, and
 * a library opened, closed and opened again. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    /* With "wait": first reads stdin to its end (a test moves the job
     * meanwhile, so what follows runs away from home). */
    if (argc > 1 && argv[1][0] == 'w') {
        char line[256];
        while (fgets(line, sizeof line, stdin)) {
        }
    }
    void *m = dlopen("libm.so.6", RTLD_NOW);
    if (!m) {
        printf("dlopen libm: %s\n", dlerror());
        return 1;
    }
    double (*cosine)(double) = (double (*)(double))dlsym(m, "cos");
    double (*power)(double, double) = (double (*)(double, double))dlsym(m, "pow");
    printf("cos(1) = %.12f, pow(2, 0.5) = %.12f\n", cosine(1.0), power(2.0, 0.5));
    void *p = dlopen("libpthread.so.0", RTLD_LAZY);
    printf("libpthread: %s\n", p ? "loaded" : dlerror());
    void *none = dlopen("libdoes-not-exist.so.9", RTLD_NOW);
    printf("missing: %s\n", none ? "loaded?" : dlerror());
    void *z = dlopen("libz.so.1", RTLD_NOW);
    if (z) {
        const char *(*ver)(void) = (const char *(*)(void))dlsym(z, "zlibVersion");
        printf("zlib has a version: %d\n", ver && ver()[0] != 0);
        dlclose(z);
        z = dlopen("libz.so.1", RTLD_NOW);
        printf("zlib again: %s\n", z ? "loaded" : dlerror());
    }
    printf("dlsym of nothing: %s\n", dlsym(m, "no_such_symbol") ? "found?" : "not found");
    dlclose(m);
    return 0;
}
