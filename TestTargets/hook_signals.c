/* hook_signals: the target's own signals while it is hooked. Handlers count SIGUSR1 and SIGTRAP
 * (SA_RESTART, SA_SIGINFO). int hook_f(int x) returns 2x + 1.
 * After `go`: calls hook_f(i) for i = 0 … N-1 (sum = N*N), then raises SIGTRAP itself (raise: si_code
 * SI_TKILL) and executes an `int3` (si_code SI_KERNEL; the handler returns to the instruction after
 * it). A tracer must hand both to the target, not take them for its own breakpoints. Then it prints
 *   sum <S>
 *   traps raise 1 int3 1          (SIGTRAPs seen with si_code SI_TKILL, and with SI_KERNEL)
 *   calls <N> usr1 <K> trap 2
 * and exits 0 (K = SIGUSR1s handled). `trap` counts every SIGTRAP the handler saw: 2 when both came.
 * Modes (argv[2]):
 *   ""           : no signals of its own; a test may send SIGUSR1 from outside (kill).
 *   "storm"      : a second thread sends SIGUSR1 to the main thread (pthread_kill) every 50 µs
 *                  from before the first call until the last; the calls start once the first SIGUSR1
 *                  has been handled, so K > 0.
 *   "storm-call" : as "storm", and the SIGUSR1 handler also calls hook_f(1000000) once, so hook_f runs
 *                  N + K times in all, some of them inside a handler that interrupted a hooked call;
 *                  `sum` still covers only the N loop calls.
 * stdin: one line `go` starts (other lines are ignored; EOF before `go`: exit 2).
 * argv: [1] N (default 100000), [2] mode, [3] lifetime s (default 120). */
#include "victim.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#define USED __attribute__((noinline, used))

volatile int hook_signals_zero = 0;

USED int hook_f(int x) {
    volatile int frame = x; /* a stack slot: the classic push %rbp; mov %rsp,%rbp head */
    (void)frame;
    return 2 * x + 1 + hook_signals_zero;
}

static atomic_long usr1_count;
static atomic_long trap_count;
static atomic_long trap_tkill_count;  /* SIGTRAPs with si_code SI_TKILL (raise) */
static atomic_long trap_kernel_count; /* SIGTRAPs with si_code SI_KERNEL (the int3) */
static volatile sig_atomic_t call_in_handler;
static volatile int handler_sink;

static void on_usr1(int sig, siginfo_t *info, void *context) {
    (void)sig; (void)info; (void)context;
    atomic_fetch_add(&usr1_count, 1);
    if (call_in_handler) handler_sink += hook_f(1000000);
}

static void on_trap(int sig, siginfo_t *info, void *context) {
    (void)sig; (void)context;
    atomic_fetch_add(&trap_count, 1);
    if (info->si_code == SI_TKILL) atomic_fetch_add(&trap_tkill_count, 1);
    if (info->si_code == SI_KERNEL) atomic_fetch_add(&trap_kernel_count, 1);
}

static void install(int sig, void (*handler)(int, siginfo_t *, void *)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) != 0) { perror("sigaction"); exit(1); }
}

static pthread_t main_thread;
static atomic_int storm_stop;

static void *storm(void *arg) {
    (void)arg;
    sigset_t set; /* this thread never takes SIGUSR1 itself */
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    while (!atomic_load(&storm_stop)) {
        pthread_kill(main_thread, SIGUSR1);
        struct timespec ts = { 0, 50 * 1000 };
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 100000);
    const char *mode = argc > 2 ? argv[2] : "";
    victim_begin((unsigned)victim_arg(argc, argv, 3, VICTIM_DEFAULT_LIFETIME));
    int storm_call = strcmp(mode, "storm-call") == 0;
    int storming = storm_call || strcmp(mode, "storm") == 0;
    if (!storming && mode[0] != '\0') { fprintf(stderr, "hook_signals: unknown mode %s\n", mode); return 2; }
    if (n < 0) { fprintf(stderr, "hook_signals: N must be >= 0\n"); return 2; }
    install(SIGUSR1, on_usr1);
    install(SIGTRAP, on_trap);
    main_thread = pthread_self();
    call_in_handler = storm_call;
    victim_ready();
    victim_wait_for_go("hook_signals");

    pthread_t stormer;
    if (storming) {
        if (pthread_create(&stormer, NULL, storm, NULL) != 0) { perror("pthread_create"); return 1; }
        while (atomic_load(&usr1_count) == 0) {} /* the storm is on before the first call */
    }
    long calls = 0, sum = 0;
    for (long i = 0; i < n; i++) {
        sum += hook_f((int)i);
        calls++;
    }
    if (storming) {
        atomic_store(&storm_stop, 1);
        pthread_join(stormer, NULL);
    }
    raise(SIGTRAP);
    __asm__ volatile("int3");
    printf("sum %ld\n", sum);
    printf("traps raise %ld int3 %ld\n", atomic_load(&trap_tkill_count), atomic_load(&trap_kernel_count));
    printf("calls %ld usr1 %ld trap %ld\n", calls, atomic_load(&usr1_count), atomic_load(&trap_count));
    fflush(stdout);
    return 0;
}
