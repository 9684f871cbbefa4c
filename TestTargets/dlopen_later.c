/* dlopen_later: a library loaded after start. After `go` it dlopens argv[1] (a path to liblate.so),
 * calls late_f(i) for i = 1 … N and prints `late <N> sum <sum of 2i>` (N(N+1)), then exits 0.
 * argv: [1] library path, [2] N (default 10), [3] lifetime s (default 120), [4] "reopen": after
 * `late …` it waits for a second `go`, dlcloses the library (unmapped), prints `closed`, waits for a
 * third `go`, dlopens it again, calls late_f(i) for i = 1 … N again, dlcloses it and prints
 * `again <N> sum <sum>`, then exits 0. */
#include "victim.h"
#include <dlfcn.h>

/* dlopens the library, calls late_f(1 … n) and returns the sum; the handle in *kept, or dlclosed
 * when kept is NULL. */
static long load_and_call(const char *path, long n, void **kept) {
    void *handle = dlopen(path, RTLD_NOW);
    if (!handle) { fprintf(stderr, "dlopen_later: %s\n", dlerror()); exit(1); }
    int (*late_f)(int) = (int (*)(int))dlsym(handle, "late_f");
    if (!late_f) { fprintf(stderr, "dlopen_later: no late_f\n"); exit(1); }
    long sum = 0;
    for (long i = 1; i <= n; i++) sum += late_f((int)i);
    if (kept) *kept = handle;
    else if (dlclose(handle) != 0) { fprintf(stderr, "dlopen_later: %s\n", dlerror()); exit(1); }
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "dlopen_later: give the library's path\n"); return 2; }
    long n = victim_arg(argc, argv, 2, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 3, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    victim_wait_for_go("dlopen_later");
    int reopen = argc > 4 && strcmp(argv[4], "reopen") == 0;
    void *kept = NULL;
    long sum = load_and_call(argv[1], n, &kept);
    printf("late %ld sum %ld\n", n, sum);
    fflush(stdout);
    if (reopen) {
        victim_wait_for_go("dlopen_later");
        if (dlclose(kept) != 0) { fprintf(stderr, "dlopen_later: %s\n", dlerror()); return 1; }
        puts("closed");
        fflush(stdout);
        victim_wait_for_go("dlopen_later");
        sum = load_and_call(argv[1], n, NULL);
        printf("again %ld sum %ld\n", n, sum);
        fflush(stdout);
    }
    return 0;
}
