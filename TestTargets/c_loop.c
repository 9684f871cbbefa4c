/* c_loop: the basic patch target. value_a/value_b/value_c return 1/2/3 through a volatile global, so
 * the compiler cannot fold them and each is at least 32 bytes; the loop prints `a=%d` of value_a().
 * argv: [1] interval ms (default 10), [2] lifetime s (default 120).
 * Built four ways: c_loop (PIE), c_loop_nopie, c_loop_stripped (-rdynamic + strip: .dynsym only),
 * c_loop_endbr (-fcf-protection=full: every function starts with endbr64). */
#include "victim.h"

volatile int c_loop_zero = 0; /* always 0; read through volatile so nothing folds */

/* Each function copies c_loop_zero into a volatile local: the stack slot makes gcc build a frame, so
 * every function starts with the classic head `push %rbp; mov %rsp,%rbp` (55 48 89 e5, after endbr64
 * in c_loop_endbr) followed by a RIP-relative load of c_loop_zero. */

#define USED __attribute__((noinline, used))

USED int value_a(void) {
    volatile int z = c_loop_zero;
    int r = 1 + z * 3;
    r += (z << 4) ^ (z & 0x55);
    r -= c_loop_zero * 7;
    return r;
}

USED int value_b(void) {
    volatile int z = c_loop_zero;
    int r = 2 + z * 5;
    r += (z << 3) ^ (z & 0x33);
    r -= c_loop_zero * 11;
    return r;
}

USED int value_c(void) {
    volatile int z = c_loop_zero;
    int r = 3 + z * 9;
    r += (z << 2) ^ (z & 0x0f);
    r -= c_loop_zero * 13;
    return r;
}

USED long add(long x, long y) {
    volatile long z = c_loop_zero;
    return x + y + z * (x ^ y) - (z << 5);
}

int main(int argc, char **argv) {
    long interval = victim_arg(argc, argv, 1, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    for (;;) {
        printf("a=%d\n", value_a());
        victim_sleep_ms(interval);
    }
}
