/* hook_tail: argv[1] N (100), argv[2] lifetime. After a stdin line `go`, calls hook_outer(i) for
 * i = 1 … N (hook_outer tail-jumps to hook_inner: see hook_tail.S), prints `tail N sum S` with
 * S = sum of 3i + 4; then calls hook_jumper(i) for i = 1 … N from one call site, which returns i
 * for even i and longjmps out for odd i, prints `jump N sum S` (S = the sum of the even i), and
 * exits 0. */
#include "victim.h"
#include <setjmp.h>

long hook_outer(long x);

static jmp_buf escape;

__attribute__((noinline, used)) long hook_jumper(long x) {
    if (x & 1) longjmp(escape, 1);
    return x;
}

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
        volatile long jumped = 0;
        for (volatile long i = 1; i <= n; i++) {
            if (!setjmp(escape)) jumped += hook_jumper(i);
        }
        printf("jump %ld sum %ld\n", n, (long)jumped);
        return 0;
    }
    fputs("hook_tail: end of input before go\n", stderr);
    return 2;
}
