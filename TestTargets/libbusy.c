/* libbusy.so: its constructor starts a thread that lives in the library (a loop that sleeps 1 ms),
 * so the library is always in use: graft must refuse to unload it (a thread's return address
 * points into it). */
#include <pthread.h>
#include <unistd.h>

static volatile unsigned long busy_rounds;

static void *busy(void *arg) {
    (void)arg;
    for (;;) {
        busy_rounds++;
        usleep(1000);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    pthread_t thread;
    pthread_create(&thread, NULL, busy, NULL);
    pthread_detach(thread);
}
