/* hook_loop: the hook benchmark's victim. T threads each loop { last = hook_bench(i); count++ } as
 * fast as they can; int hook_bench(int x) is tiny (returns x + 1; head `55 48 89 e5`
 * push %rbp; mov %rsp,%rbp) and every call is counted in the calling thread's own volatile counter.
 * No `go`: `ready` comes once every thread has made a call. Then every second (monotonic clock) it
 * prints `rate <R>`: calls per second, all threads, over the last second. On SIGTERM or SIGINT (a
 * handler sets a flag; only the main thread takes them), or after argv[2] seconds, the threads stop
 * and it prints `calls <N>` (every call made since start, `ready`'s warm-up calls included) and
 * exits 0.
 * argv: [1] threads (default 1, max 64), [2] run seconds (default 0: until SIGTERM/SIGINT),
 *       [3] lifetime s (default 120; raised to run seconds + 30 when that is longer). */
#include "victim.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#define USED __attribute__((noinline, used))
#define MAX_THREADS 64

volatile int hook_loop_zero = 0;

/* The volatile local (a stack slot) makes gcc build a frame: without it this leaf would start with
 * the RIP-relative load. push %rbp is the head most compiled functions have, and one a hook engine
 * emulates (one stop per hit), which is what the benchmark measures. */
USED int hook_bench(int x) {
    volatile int frame = x;
    (void)frame;
    return x + 1 + hook_loop_zero;
}

struct slot { volatile unsigned long count; volatile int last; } __attribute__((aligned(64)));
static struct slot slots[MAX_THREADS];
static atomic_int stop_workers;
static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void *worker(void *arg) {
    struct slot *s = arg;
    int i = 0;
    while (!atomic_load_explicit(&stop_workers, memory_order_relaxed)) {
        s->last = hook_bench(i++);
        s->count++;
    }
    return NULL;
}

static unsigned long total(long n) {
    unsigned long sum = 0;
    for (long i = 0; i < n; i++) sum += slots[i].count;
    return sum;
}

static double seconds(const struct timespec *t) { return (double)t->tv_sec + (double)t->tv_nsec / 1e9; }

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 1);
    long run = victim_arg(argc, argv, 2, 0);
    long lifetime = victim_arg(argc, argv, 3, VICTIM_DEFAULT_LIFETIME);
    if (n < 1 || n > MAX_THREADS) { fprintf(stderr, "hook_loop: threads must be 1 … %d\n", MAX_THREADS); return 2; }
    if (run > 0 && lifetime < run + 30) lifetime = run + 30;
    victim_begin((unsigned)lifetime);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: the main thread's sleep returns EINTR at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* Workers block SIGTERM/SIGINT (inherited mask), so the main thread takes them and wakes. */
    sigset_t stops, old;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stops, &old);
    pthread_t threads[MAX_THREADS];
    for (long i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, worker, &slots[i]) != 0) { perror("pthread_create"); return 1; }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    for (long i = 0; i < n; i++)
        while (slots[i].count == 0 && !stop_requested) victim_sleep_ms(1);
    victim_ready();

    struct timespec start, tick, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    tick = start;
    unsigned long tick_calls = total(n);
    while (!stop_requested) {
        struct timespec next = { tick.tv_sec + 1, tick.tv_nsec };
        if (run > 0 && seconds(&next) > seconds(&start) + (double)run)
            next = (struct timespec){ start.tv_sec + run, start.tv_nsec };
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        if (rc == EINTR) continue; /* a signal: stop_requested says whether it was ours */
        clock_gettime(CLOCK_MONOTONIC, &now);
        unsigned long calls = total(n);
        double dt = seconds(&now) - seconds(&tick);
        if (dt >= 0.5) /* a last partial second (end of run) gets no rate line */
            printf("rate %.0f\n", (double)(calls - tick_calls) / dt);
        tick = now;
        tick_calls = calls;
        if (run > 0 && seconds(&now) >= seconds(&start) + (double)run) break;
    }
    atomic_store(&stop_workers, 1);
    for (long i = 0; i < n; i++) pthread_join(threads[i], NULL);
    printf("calls %lu\n", total(n));
    fflush(stdout);
    return 0;
}
