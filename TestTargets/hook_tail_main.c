/* hook_tail: argv[1] N (100), argv[2] lifetime. After a stdin line `go`, calls hook_outer(i) for
 * i = 1 … N (hook_outer tail-jumps to hook_inner: see hook_tail.S), prints `tail N sum S` with
 * S = sum of 3i + 4, and exits 0. */
#include "victim.h"

long hook_outer(long x);

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 100);
    victim_begin((unsigned)victim_arg(argc, argv, 2, 0));
    victim_ready();
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "go", 2) != 0) continue;
        long sum = 0;
        for (long i = 1; i <= n; i++) sum += hook_outer(i);
        printf("tail %ld sum %ld\n", n, sum);
        return 0;
    }
    fputs("hook_tail: end of input before go\n", stderr);
    return 2;
}
