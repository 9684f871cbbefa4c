/* call_in_head main: a thread calls call_head(slow_callee); slow_callee raises a flag, sleeps argv[1]
 * seconds (default 30) and returns 7. `ready` is printed once that thread is inside slow_callee, i.e.
 * while a return address call_head+2 sits on its stack. When it returns main prints `returned 107`,
 * then loops printing `value %d` of call_head(fast_callee) (= 101) every 10 ms.
 * argv: [1] sleep s (default 30), [2] lifetime s (default 120). */
#include "victim.h"
#include <pthread.h>

#define USED __attribute__((noinline, used))

int call_head(int (*callee)(void));

static volatile int inside_slow = 0;
static long sleep_seconds = 30;
volatile int call_zero = 0;

/* Entered with a misaligned stack (see call_in_head.S): realign before calling libc. */
USED __attribute__((force_align_arg_pointer)) int slow_callee(void) {
    inside_slow = 1;
    struct timespec ts = { sleep_seconds, 0 };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
    return 7 + call_zero;
}

USED __attribute__((force_align_arg_pointer)) int fast_callee(void) {
    return 1 + call_zero;
}

static volatile int slow_result = -1;

static void *sleeper(void *arg) {
    (void)arg;
    slow_result = call_head(slow_callee);
    return NULL;
}

int main(int argc, char **argv) {
    sleep_seconds = victim_arg(argc, argv, 1, 30);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    pthread_t t;
    if (pthread_create(&t, NULL, sleeper, NULL) != 0) { perror("pthread_create"); return 1; }
    while (!inside_slow) victim_sleep_ms(1);
    victim_ready();
    pthread_join(t, NULL);
    printf("returned %d\n", slow_result);
    for (;;) {
        printf("value %d\n", call_head(fast_callee));
        victim_sleep_ms(10);
    }
}
