/* malloc_storm: every thread (the main thread too) allocates and frees 4000-byte blocks without a
 * pause (above the tcache sizes: each malloc takes the arena lock). Run with MALLOC_ARENA_MAX=1 so
 * they share one arena and one lock. Worker 1 prints `allocs N` every 2^18 of its allocations: the
 * process makes progress. argv: [1] threads besides main (8), [2] lifetime s (120). */
#include "victim.h"
#include <pthread.h>

static void *storm(void *arg) {
    long id = (long)arg;
    unsigned long n = 0;
    for (;;) {
        char *block = malloc(4000 + (n & 63));
        if (!block) abort();
        block[0] = (char)n;
        free(block);
        if (id == 1 && (++n & ((1ul << 18) - 1)) == 0) printf("allocs %lu\n", n);
        else if (id != 1) n++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    long threads = victim_arg(argc, argv, 1, 8);
    victim_ready();  /* first: worker 1's `allocs` lines come after it */
    for (long i = 1; i <= threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, storm, (void *)i);
    }
    storm((void *)0);
}
