/* watch_target: a variable written by several threads, for `graft watch` and `graft hook --hardware`.
 * After `go`, T threads each call bump() N times; bump() adds 1 to `counter` with one locked add (one
 * write per call) and returns the new value. Then main reads `counter` once through peek() and prints
 * `counter <value>` and exits 0.
 *   mode ""      : the T threads exist (blocked on a barrier) when `ready` is printed.
 *   mode "spawn" : the T threads are created after `go` (threads created later must be watched too).
 * Other variables: `small` (4 ints, 16 bytes: longer than a debug register watches), `flag` (a
 * read-only string in .rodata).
 * stdin: one line `go` starts the calls. argv: [1] N (default 1000), [2] T (default 1, max 64),
 * [3] mode, [4] lifetime s (default 120). */
#include "victim.h"
#include <pthread.h>

#define USED __attribute__((noinline, used))
#define MAX_THREADS 64

volatile long counter;
volatile int small[4];
const char flag[] = "read-only";

USED long bump(void) {
    return __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST);
}

USED long peek(void) {
    return counter;
}

struct worker { pthread_t thread; long calls; };
static pthread_barrier_t start_barrier;
static int use_barrier;

USED static void *writer_thread(void *arg) {
    struct worker *w = arg;
    if (use_barrier) pthread_barrier_wait(&start_barrier);
    for (long i = 0; i < w->calls; i++) bump();
    small[1] = (int)w->calls;
    return NULL;
}

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 1000);
    long t = victim_arg(argc, argv, 2, 1);
    const char *mode = argc > 3 ? argv[3] : "";
    victim_begin((unsigned)victim_arg(argc, argv, 4, VICTIM_DEFAULT_LIFETIME));
    int spawn = strcmp(mode, "spawn") == 0;
    if (!spawn && mode[0] != '\0') { fprintf(stderr, "watch_target: unknown mode %s\n", mode); return 2; }
    if (n < 0 || t < 1 || t > MAX_THREADS) { fprintf(stderr, "watch_target: need N >= 0 and 1 <= T <= %d\n", MAX_THREADS); return 2; }
    static struct worker workers[MAX_THREADS];
    for (long k = 0; k < t; k++) workers[k].calls = n;
    use_barrier = !spawn;
    if (use_barrier) {
        pthread_barrier_init(&start_barrier, NULL, (unsigned)t + 1);
        for (long k = 0; k < t; k++)
            if (pthread_create(&workers[k].thread, NULL, writer_thread, &workers[k]) != 0) { perror("pthread_create"); return 1; }
    }
    victim_ready();
    victim_wait_for_go("watch_target");
    if (use_barrier) {
        pthread_barrier_wait(&start_barrier);
    } else {
        for (long k = 0; k < t; k++)
            if (pthread_create(&workers[k].thread, NULL, writer_thread, &workers[k]) != 0) { perror("pthread_create"); return 1; }
    }
    for (long k = 0; k < t; k++) pthread_join(workers[k].thread, NULL);
    printf("counter %ld %s\n", peek(), flag);
    fflush(stdout);
    return 0;
}
