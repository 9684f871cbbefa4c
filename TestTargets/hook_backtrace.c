/* hook_backtrace: a known call chain for backtraces, main -> outer_fn -> middle_fn -> inner_fn.
 * Every function does work after its call (adds to a volatile global), so none is a tail call and each
 * caller's frame is really on the stack when inner_fn runs. For the k-th `go` line (k = 1, 2, …)
 * main calls outer_fn(k): inner_fn(n) returns 100n, middle_fn adds 10, outer_fn adds 1, and main
 * prints `inner <outer_fn(k)>` = `inner 111`, `inner 211`, … At end of input it prints `eof` and
 * exits 0. Lines other than `go` are ignored.
 * Built twice: hook_backtrace (with .symtab) and hook_backtrace_stripped (-rdynamic + strip: the
 * function names are only in .dynsym; .eh_frame stays, so unwinding still works).
 * argv: [1] lifetime s (default 120). */
#include "victim.h"

#define USED __attribute__((noinline, used))

volatile long backtrace_work = 0; /* the work each function does after its call */
volatile long backtrace_zero = 0;

USED long inner_fn(long n) {
    volatile long frame = n; /* a stack slot: the classic push %rbp; mov %rsp,%rbp head */
    (void)frame;
    backtrace_work += n;
    return n * 100 + backtrace_zero;
}

USED long middle_fn(long n) {
    long r = inner_fn(n);
    backtrace_work += r;
    return r + 10 + backtrace_zero;
}

USED long outer_fn(long n) {
    long r = middle_fn(n);
    backtrace_work += r;
    return r + 1 + backtrace_zero;
}

int main(int argc, char **argv) {
    victim_begin((unsigned)victim_arg(argc, argv, 1, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    char line[256];
    long k = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (strcmp(line, "go\n") != 0 && strcmp(line, "go") != 0) continue;
        long x = outer_fn(++k);
        backtrace_work += x;
        printf("inner %ld\n", x);
    }
    puts("eof");
    fflush(stdout);
    return 0;
}
