/* A small "price service" for graft's library tests (docs/inject.md's worked example): 8 worker
 * threads call price() all the time; the main thread prints a quote line every 20 ms.
 * price() has a bug: quantities over 100 come out negative. examples/inject/libfix.c fixes it in
 * the running process, calling the original price() through graft_original_fixed_price.
 *   price_service [THREADS [LIFETIME_SECONDS]] */
#include "victim.h"
#include <pthread.h>
#include <stdatomic.h>

int unit_price = 10;
static atomic_long calls;

__attribute__((noinline)) int price(int quantity) {
    int total = quantity * unit_price;
    if (quantity > 100) total = -total; /* the bug */
    return total;
}

static void *worker(void *arg) {
    int quantity = (int)(long)arg;
    volatile long sink = 0;
    for (;;) {
        int got = price(quantity);
        if (got != quantity * unit_price) { /* a trampoline that got it wrong: say so and stop */
            printf("WRONG: worker price(%d) = %d, expected %d\n", quantity, got, quantity * unit_price);
            exit(3);
        }
        sink += got;
        atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    }
    return NULL;
}

int main(int argc, char **argv) {
    victim_begin((unsigned)victim_arg(argc, argv, 2, 120));
    long threads = victim_arg(argc, argv, 1, 8);
    for (long i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, (void *)(i + 1));
    }
    victim_ready();
    for (long tick = 0;; tick++) {
        printf("tick %ld price(7)=%d price(150)=%d\n", tick, price(7), price(150));
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}
