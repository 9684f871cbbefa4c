/* typed_victim: the victim of bench/typed_args.sh. One thread calls
 *   int price(const char *item, int qty)
 * in a loop (built -g: graft finds its DWARF), counting calls; prints `ready pid=<PID>` once running
 * and, on SIGTERM, `calls <N>`. argv: [1] seconds to live (default 60). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

volatile int typed_zero;
static volatile sig_atomic_t stop;

__attribute__((noinline, used)) int price(const char *item, int qty) {
    return qty * 10 + typed_zero * (int)strlen(item);
}

static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    signal(SIGTERM, on_term);
    alarm(argc > 1 ? (unsigned)atoi(argv[1]) : 60);
    printf("ready pid=%d\n", getpid());
    fflush(stdout);
    unsigned long calls = 0;
    long sum = 0;
    while (!stop) { sum += price("apple pie with cream", (int)(calls & 7)); calls++; }
    printf("calls %lu sum %ld\n", calls, sum);
    return 0;
}
