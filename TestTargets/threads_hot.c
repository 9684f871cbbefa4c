/* threads_hot: N threads each call hot() in a tight loop; patching hot while they run is the test.
 * Each thread i loops { values[i] = hot(0); counters[i]++; }. hot returns 1, hot_alt returns 2
 * (same signature). Every 50 ms main prints `counters c0 … cN-1` then `values v0 … vN-1` (the last
 * return value each thread got). `ready` comes once every thread has made a call.
 * argv: [1] threads (default 8, max 64), [2] lifetime s (default 120). */
#include "victim.h"
#include <pthread.h>

#define USED __attribute__((noinline, used))
#define MAX_THREADS 64

volatile int hot_zero = 0;

USED int hot(int x) {
    volatile int z = hot_zero; /* stack slot: gives hot the push %rbp; mov %rsp,%rbp head */
    int r = x * z + 1;
    r += (z << 3) ^ (x & z);
    r -= hot_zero * 7;
    return r;
}

USED int hot_alt(int x) {
    volatile int z = hot_zero;
    int r = x * z + 2;
    r += (z << 5) ^ (x | z) * z;
    r -= hot_zero * 3;
    return r;
}

struct slot { volatile unsigned long count; volatile int value; } __attribute__((aligned(64)));
static struct slot slots[MAX_THREADS];

static void *worker(void *arg) {
    struct slot *s = arg;
    for (;;) {
        s->value = hot(0);
        s->count++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 8);
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, &slots[i]) != 0) { perror("pthread_create"); return 1; }
    }
    for (long i = 0; i < n; i++)
        while (slots[i].count == 0) victim_sleep_ms(1);
    victim_ready();
    for (;;) {
        victim_sleep_ms(50);
        char line[64 * 24 + 16];
        int len = snprintf(line, sizeof line, "counters");
        for (long i = 0; i < n; i++) len += snprintf(line + len, sizeof line - len, " %lu", slots[i].count);
        puts(line);
        len = snprintf(line, sizeof line, "values");
        for (long i = 0; i < n; i++) len += snprintf(line + len, sizeof line - len, " %d", slots[i].value);
        puts(line);
    }
}
