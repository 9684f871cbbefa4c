/* thread_churn: threads that come and go all the time, for attaching to a process whose thread list
 * changes while graft lists and seizes it. argv: [1] lifetime s (120).
 * The main thread starts a new thread every ~50 µs (at most 4 alive; each is detached, calls
 * `int churn_f(void)` (returns 1; >= 32 bytes, `55 48 89 e5` head) 100 times, stores the last
 * result and exits), and every 20 ms prints `churn T V` (T threads started so far, V the last
 * value a thread got from churn_f: `churn 12345 1`, `churn 12400 5` once churn_f returns 5).
 * `ready` once the first threads have run. A start routine that runs twice for one
 * pthread_create (a clone broken under the tracer: glibc retries clone3's ENOSYS with clone) prints
 * `DUP N`. */
#include "victim.h"
#include <pthread.h>
#include <stdatomic.h>

static atomic_int alive;
static atomic_int last_value;
static atomic_long started;
static volatile int sink;
static atomic_uchar runs[1 << 20];

__attribute__((noinline, used)) int churn_f(void) {
    int x = sink;
    for (int i = 0; i < 3; i++) x += i;
    sink = x;
    return 1;
}

static void *worker(void *arg) {
    long n = (long)arg;
    if (atomic_fetch_add(&runs[n & ((1 << 20) - 1)], 1) != 0) printf("DUP %ld\n", n);
    int v = 0;
    for (int i = 0; i < 100; i++) v = churn_f();
    atomic_store(&last_value, v);
    atomic_fetch_sub(&alive, 1);
    return NULL;
}

int main(int argc, char **argv) {
    victim_begin((unsigned)victim_arg(argc, argv, 1, VICTIM_DEFAULT_LIFETIME));
    struct timespec last = { 0, 0 }, now;
    int announced = 0;
    for (;;) {
        if (atomic_load(&alive) < 4) {
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            pthread_t t;
            atomic_fetch_add(&alive, 1);
            if (pthread_create(&t, &attr, worker, (void *)(atomic_load(&started) + 1)) != 0) atomic_fetch_sub(&alive, 1);
            else atomic_fetch_add(&started, 1);
            pthread_attr_destroy(&attr);
        }
        struct timespec pause = { 0, 50000 };
        nanosleep(&pause, NULL);
        if (!announced && atomic_load(&started) >= 8 && atomic_load(&last_value) != 0) {
            victim_ready();
            announced = 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
        if (announced && ms >= 20) {
            printf("churn %ld %d\n", atomic_load(&started), atomic_load(&last_value));
            last = now;
        }
    }
}
