/* trace_calls main: drives the assembly functions of trace_calls.S (exact instruction counts: see the
 * comment block at its top) one call at a time, on stdin lines, for the single-step trace tests.
 * After `ready`, per stdin line:
 *   `go`      the k-th one (k = 1, 2, …) calls trace_a(k) and prints `traced <k> <result>`
 *             (result 12k + 71: `traced 1 83`, `traced 2 95`, …)
 *   `rec`     calls trace_fact(5) and prints `fact 5 120`;  `rec N` (0 <= N <= 20): trace_fact(N),
 *             `fact N N!`
 *   other lines are ignored. At end of input: `eof`, exit 0.
 * Modes (argv[1]):
 *   ""        nothing else: the process has one thread.
 *   "busy"    before `ready` two more threads start: one calls busy_compute() in a loop forever
 *             (always in user space), one loops { fork(); the child _exit(0)s; waitpid; sleep 2 ms };
 *             `ready` comes once both have (a fork done, busy_compute called).
 *             Other threads' work and other processes' births and deaths while the main thread is
 *             traced.
 *   "signals" before `ready` a thread starts sending SIGUSR1 to the main thread (pthread_kill) every
 *             200 µs; trace_handler() (SA_RESTART, C, noinline) counts them. After every `traced` and
 *             `fact` line main prints `usr1 <n>` (handled so far, cumulative; `ready` waits for the
 *             first one, so n > 0). A handler that runs during a traced call runs on top of it: its
 *             instructions are trace_handler's (and libc's __restore_rt's), not trace_a's.
 * argv: [1] mode, [2] lifetime s (default 120). */
#include "victim.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

#define USED __attribute__((noinline, used))

long trace_a(long k);
long trace_fact(long n);
long trace_rep(void);

/* --- busy ------------------------------------------------------------------------------------------- */
volatile unsigned long busy_sink;

USED unsigned long busy_compute(unsigned long x) {
    unsigned long h = x;
    for (int i = 0; i < 64; i++) h = h * 6364136223846793005UL + 1442695040888963407UL;
    return h;
}

static void *busy_loop(void *arg) {
    (void)arg;
    for (unsigned long i = 0;; i++) busy_sink += busy_compute(i);
    return NULL;
}

volatile unsigned long forks_done;

static void *fork_loop(void *arg) {
    (void)arg;
    for (;;) {
        pid_t child = fork();
        if (child == 0) _exit(0);
        if (child > 0) {
            while (waitpid(child, NULL, 0) == -1 && errno == EINTR) {}
            forks_done++;
        }
        victim_sleep_ms(2);
    }
    return NULL;
}

/* --- signals ---------------------------------------------------------------------------------------- */
static atomic_long usr1_count;
static pthread_t main_thread;

USED void trace_handler(int sig) {
    (void)sig;
    atomic_fetch_add(&usr1_count, 1);
}

static void *signal_loop(void *arg) {
    (void)arg;
    sigset_t set; /* this thread never takes SIGUSR1 itself */
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        pthread_kill(main_thread, SIGUSR1);
        struct timespec ts = { 0, 200 * 1000 };
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void start_thread(void *(*fn)(void *)) {
    pthread_t t;
    if (pthread_create(&t, NULL, fn, NULL) != 0) { perror("pthread_create"); exit(1); }
    pthread_detach(t);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    int busy = strcmp(mode, "busy") == 0;
    int signals = strcmp(mode, "signals") == 0;
    if (!busy && !signals && mode[0] != '\0') { fprintf(stderr, "trace_calls: unknown mode %s\n", mode); return 2; }
    main_thread = pthread_self();
    if (busy) {
        start_thread(busy_loop);
        start_thread(fork_loop);
    }
    if (signals) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = trace_handler;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGUSR1, &sa, NULL) != 0) { perror("sigaction"); return 1; }
        start_thread(signal_loop);
        while (atomic_load(&usr1_count) == 0) victim_sleep_ms(1); /* the storm is on before `ready` */
    }
    if (busy) /* both threads are at work before `ready` */
        while (forks_done == 0 || busy_sink == 0) victim_sleep_ms(1);
    victim_ready();

    char line[256];
    long k = 0;
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "go") == 0) {
            long r = trace_a(++k);
            printf("traced %ld %ld\n", k, r);
        } else if (strcmp(line, "rec") == 0 || strncmp(line, "rec ", 4) == 0) {
            long n = line[3] == ' ' ? strtol(line + 4, NULL, 10) : 5;
            if (n < 0 || n > 20) { printf("fact %ld out of range\n", n); continue; }
            long r = trace_fact(n);
            printf("fact %ld %ld\n", n, r);
        } else if (strcmp(line, "rep") == 0) {
            printf("rep %ld\n", trace_rep());
        } else {
            continue;
        }
        if (signals) printf("usr1 %ld\n", atomic_load(&usr1_count));
    }
    puts("eof");
    fflush(stdout);
    return 0;
}
