/* hook_count: exact hit counts, arguments and return values. After `go`, T threads call
 *   int hook_f(long a, long b, long c, long d, long e, long f, long g)
 * N times in total (thread t makes calls i = t*N/T+1 … (t+1)*N/T, so N need not divide by T) with
 * arguments (i, 2i, 3i, 4i, 5i, 6i, 7i): six in rdi, rsi, rdx, rcx, r8, r9 and g on the stack at
 * 8(%rsp) on entry. hook_f is a leaf returning (int)(a + g) = 8i. Each thread counts its calls and
 * sums the return values; then main prints `calls <calls made> sum <sum>` (sum = 4N(N+1)) and exits 0.
 *   mode ""      : the T threads exist (blocked on a barrier) when `ready` is printed.
 *   mode "spawn" : the T threads are created after `go` (new threads must be hooked too).
 *   mode "print" : one thread (T must be 1); each call also prints `call a b c d e f g -> r`.
 * stdin: one line `go` starts the calls (other lines are ignored; EOF before `go`: exit 2).
 * argv: [1] N (default 1000), [2] T (default 1, max 64), [3] mode, [4] lifetime s (default 120). */
#include "victim.h"
#include <pthread.h>

#define USED __attribute__((noinline, used))
#define MAX_THREADS 64

volatile long hook_count_zero = 0; /* always 0: read through volatile so hook_f cannot be folded */

USED int hook_f(long a, long b, long c, long d, long e, long f, long g) {
    long z = hook_count_zero;
    return (int)(a + g + z * (b ^ c ^ d ^ e ^ f));
}

struct worker {
    pthread_t thread;
    long first, last; /* call indexes first … last, inclusive */
    unsigned long calls;
    long sum;
    int print;
};

static pthread_barrier_t start_barrier;
static int use_barrier;

static void *work(void *arg) {
    struct worker *w = arg;
    if (use_barrier) pthread_barrier_wait(&start_barrier);
    unsigned long calls = 0;
    long sum = 0;
    for (long i = w->first; i <= w->last; i++) {
        int r = hook_f(i, 2 * i, 3 * i, 4 * i, 5 * i, 6 * i, 7 * i);
        calls++;
        sum += r;
        if (w->print)
            printf("call %ld %ld %ld %ld %ld %ld %ld -> %d\n", i, 2 * i, 3 * i, 4 * i, 5 * i, 6 * i, 7 * i, r);
    }
    w->calls = calls;
    w->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 1000);
    long t = victim_arg(argc, argv, 2, 1);
    const char *mode = argc > 3 ? argv[3] : "";
    victim_begin((unsigned)victim_arg(argc, argv, 4, VICTIM_DEFAULT_LIFETIME));
    int print = strcmp(mode, "print") == 0, spawn = strcmp(mode, "spawn") == 0;
    if (!print && !spawn && mode[0] != '\0') { fprintf(stderr, "hook_count: unknown mode %s\n", mode); return 2; }
    if (n < 0 || t < 1 || t > MAX_THREADS) { fprintf(stderr, "hook_count: need N >= 0 and 1 <= T <= %d\n", MAX_THREADS); return 2; }
    if (print && t != 1) { fprintf(stderr, "hook_count: print mode is single-threaded (T = 1)\n"); return 2; }

    static struct worker workers[MAX_THREADS];
    for (long k = 0; k < t; k++) {
        workers[k].first = k * n / t + 1;
        workers[k].last = (k + 1) * n / t;
        workers[k].print = print;
    }
    use_barrier = !spawn;
    if (use_barrier) {
        pthread_barrier_init(&start_barrier, NULL, (unsigned)t + 1);
        for (long k = 0; k < t; k++)
            if (pthread_create(&workers[k].thread, NULL, work, &workers[k]) != 0) { perror("pthread_create"); return 1; }
    }
    victim_ready();
    victim_wait_for_go("hook_count");
    if (use_barrier) {
        pthread_barrier_wait(&start_barrier);
    } else {
        for (long k = 0; k < t; k++)
            if (pthread_create(&workers[k].thread, NULL, work, &workers[k]) != 0) { perror("pthread_create"); return 1; }
    }
    unsigned long calls = 0;
    long sum = 0;
    for (long k = 0; k < t; k++) {
        pthread_join(workers[k].thread, NULL);
        calls += workers[k].calls;
        sum += workers[k].sum;
    }
    printf("calls %lu sum %ld\n", calls, sum);
    fflush(stdout);
    return 0;
}
