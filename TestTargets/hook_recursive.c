/* hook_recursive: return hooks under recursion (many frames of one function on one thread).
 * After `go`: hook_fact(5) (6 calls, n = 5 … 0; every call returns n!), then hook_fib(10) (double
 * recursion: 177 calls), each call counted in a global. Output, then exit 0:
 *   fact 5 = 120
 *   fact_calls 6
 *   fib 10 = 55
 *   fib_calls 177
 *   done
 * Neither recursion is a tail call (work follows each recursive call; checked with objdump).
 * stdin: one line `go` starts (other lines are ignored; EOF before `go`: exit 2).
 * argv: [1] fact n (default 5), [2] fib n (default 10), [3] lifetime s (default 120). */
#include "victim.h"

#define USED __attribute__((noinline, used))

volatile long hook_recursive_zero = 0; /* always 0: keeps the bodies from being folded */
volatile long fact_calls = 0;
volatile long fib_calls = 0;

/* The volatile local (a stack slot) makes gcc build the frame on every path, so both functions start
 * with `push %rbp; mov %rsp,%rbp` (55 48 89 e5) instead of a shrink-wrapped RIP-relative load. */
USED long hook_fact(long n) {
    volatile long frame = n;
    (void)frame;
    fact_calls++;
    if (n <= hook_recursive_zero) return 1; /* 0! = 1: the recursion goes down to n = 0 */
    long r = hook_fact(n - 1);
    return n * r + hook_recursive_zero;
}

USED long hook_fib(long n) {
    volatile long frame = n;
    (void)frame;
    fib_calls++;
    if (n < 2) return n + hook_recursive_zero;
    long a = hook_fib(n - 1);
    long b = hook_fib(n - 2);
    return a + b + hook_recursive_zero;
}

int main(int argc, char **argv) {
    long fact_n = victim_arg(argc, argv, 1, 5);
    long fib_n = victim_arg(argc, argv, 2, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 3, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    victim_wait_for_go("hook_recursive");
    long f = hook_fact(fact_n);
    printf("fact %ld = %ld\n", fact_n, f);
    printf("fact_calls %ld\n", fact_calls);
    long b = hook_fib(fib_n);
    printf("fib %ld = %ld\n", fib_n, b);
    printf("fib_calls %ld\n", fib_calls);
    puts("done");
    fflush(stdout);
    return 0;
}
