/* trace_busy: the single-step benchmark's and long traces' victim. T threads each loop forever
 *   { sink += busy_outer(i++); count++ }
 * where busy_outer(x) calls busy_inner 8 times in a loop and busy_inner does a few multiply-adds:
 * small noinline functions (standard frames, calls and returns, a loop) and never a system call, so a
 * stepped worker is always in user space and a single-step never waits on the kernel. Prints nothing
 * else while running: `ready` once every worker has made a call, then one line
 * `tids <tid1> … <tidT>` (the workers' thread ids; the main thread, which only sleeps, is the pid).
 * Exits by SIGALRM after the lifetime.
 * argv: [1] threads (default 1, max 64), [2] lifetime s (default 120). */
#include "victim.h"
#include <pthread.h>
#include <sys/syscall.h>

#define USED __attribute__((noinline, used))
#define MAX_THREADS 64

volatile int busy_zero = 0;

USED unsigned long busy_inner(unsigned long x) {
    unsigned long h = x ^ 0x9e3779b97f4a7c15UL;
    h = h * 0xbf58476d1ce4e5b9UL + busy_zero;
    h ^= h >> 31;
    return h * 0x94d049bb133111ebUL + 7;
}

USED unsigned long busy_outer(unsigned long x) {
    unsigned long acc = x;
    for (int i = 0; i < 8; i++) acc += busy_inner(acc + (unsigned long)i);
    return acc;
}

struct slot { volatile unsigned long count; volatile unsigned long sink; volatile pid_t tid; } __attribute__((aligned(64)));
static struct slot slots[MAX_THREADS];

static void *worker(void *arg) {
    struct slot *s = arg;
    s->tid = (pid_t)syscall(SYS_gettid);
    for (unsigned long i = 0;; i++) {
        s->sink += busy_outer(i);
        s->count++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 1);
    if (n < 1 || n > MAX_THREADS) { fprintf(stderr, "trace_busy: threads must be 1 … %d\n", MAX_THREADS); return 2; }
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    pthread_t threads[MAX_THREADS];
    for (long i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, worker, &slots[i]) != 0) { perror("pthread_create"); return 1; }
    for (long i = 0; i < n; i++)
        while (slots[i].count == 0) victim_sleep_ms(1);
    victim_ready();
    printf("tids");
    for (long i = 0; i < n; i++) printf(" %d", (int)slots[i].tid);
    printf("\n");
    fflush(stdout);
    for (;;) pause();
}
