/* dlopen_later: a library loaded after start. After `go` it dlopens argv[1] (a path to liblate.so),
 * calls late_f(i) for i = 1 … N and prints `late <N> sum <sum of 2i>` (N(N+1)), then exits 0.
 * argv: [1] library path, [2] N (default 10), [3] lifetime s (default 120). */
#include "victim.h"
#include <dlfcn.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "dlopen_later: give the library's path\n"); return 2; }
    long n = victim_arg(argc, argv, 2, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 3, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    victim_wait_for_go("dlopen_later");
    void *handle = dlopen(argv[1], RTLD_NOW);
    if (!handle) { fprintf(stderr, "dlopen_later: %s\n", dlerror()); return 1; }
    int (*late_f)(int) = (int (*)(int))dlsym(handle, "late_f");
    if (!late_f) { fprintf(stderr, "dlopen_later: no late_f\n"); return 1; }
    long sum = 0;
    for (long i = 1; i <= n; i++) sum += late_f((int)i);
    printf("late %ld sum %ld\n", n, sum);
    fflush(stdout);
    return 0;
}
