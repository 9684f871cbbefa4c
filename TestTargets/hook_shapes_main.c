/* hook_shapes main: after `go`, for i = 0 … N-1 calls every shape once per iteration:
 *   shape_endbr(i), shape_push(i), shape_riprel(i), shape_sub_rsp(i), labs(-(i + 5)),
 *   shape_jmp(i), shape_call(i), shape_jmp32(i)
 * (each returns i + k, k = 1 … 8 in that order; labs is libc's, reached through this binary's PLT:
 * built with -fno-builtin-labs so gcc does not inline it), then prints
 *   shapes done A B C D E F G H
 * (the sum over i of each, in that order: N(N-1)/2 + k*N; for N = 1000: 500500 501500 … 507500) and
 * exits 0. libc's labs starts with `48 89 f8` mov %rdi,%rax (Debian 12 glibc 2.36; no endbr64).
 * stdin: one line `go` starts (other lines are ignored; EOF before `go`: exit 2).
 * argv: [1] N calls of each (default 1000), [2] lifetime s (default 120). */
#include "victim.h"

int shape_endbr(int x);
int shape_push(int x);
int shape_riprel(int x);
int shape_sub_rsp(int x);
int shape_jmp(int x);
int shape_call(int x);
int shape_jmp32(int x);

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 1000);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    victim_wait_for_go("hook_shapes");
    long s[8] = { 0 };
    for (long i = 0; i < n; i++) {
        int x = (int)i;
        s[0] += shape_endbr(x);
        s[1] += shape_push(x);
        s[2] += shape_riprel(x);
        s[3] += shape_sub_rsp(x);
        s[4] += labs(-(i + 5));
        s[5] += shape_jmp(x);
        s[6] += shape_call(x);
        s[7] += shape_jmp32(x);
    }
    printf("shapes done %ld %ld %ld %ld %ld %ld %ld %ld\n", s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    fflush(stdout);
    return 0;
}
