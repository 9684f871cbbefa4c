/* victim_gap: the target of the stop-window benchmark (bench/run.sh). It measures, from inside, how
 * long a tool kept it stopped: the same yardstick for graft, bench/c_patch and gdb.
 *
 * N threads (argv[1], default 1) spin: call bench_target(), read CLOCK_MONOTONIC, and track the
 * largest gap between consecutive reads. A spinning thread only sees a gap when it was off the CPU,
 * either stopped (a ptrace-stop is a *voluntary* context switch) or preempted (an involuntary one: with
 * 8 spinners on 2 vCPUs that happens every few ms and has nothing to do with the tool). So for every
 * gap over 2 us the thread asks getrusage(RUSAGE_THREAD) whether its voluntary-switch count moved:
 *   stop gap  = a gap that contains a voluntary switch (the thread was stopped; what a tool causes);
 *   raw gap   = any gap (includes preemption: the noise floor on an oversubscribed machine);
 *   held      = stop gap minus the time the thread then waited on a run queue for a CPU
 *               (run_delay from /proc/thread-self/schedstat): how long it was held, not queued.
 *
 * SIGUSR1 asks for a report: the main thread (itself one of the N spinners; the others block SIGUSR1)
 * waits until every thread has run since the request (up to 2 s), prints one line and resets every
 * counter:
 *   gap_ns=<max stop gap> held_ns=<max held> raw_ns=<max raw gap> stopped=<threads with a
 *   stop gap> state=<original|patched|mixed> lagging=<threads that did not run within 2 s>
 * `state` is what bench_target() last returned in every thread: 1 = original code, 2 = bench_other
 * (the jump is live). The report's own time is not counted as a gap.
 * Prints `ready` once every thread runs. Exits by itself after argv[2] seconds (default 300).
 *
 * bench_target and bench_other are written in assembly so that their first instruction is ONE 5-byte
 * nop: a thread can never be stopped inside the 5 bytes a jump overwrites, so even tools that do not
 * check thread PCs (bench/c_patch, gdb) patch it safely, and graft needs no single-step. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

__asm__(
    ".text\n"
    ".globl bench_target\n"
    ".type bench_target,@function\n"
    ".p2align 5\n"
    "bench_target:\n"
    "  .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n" /* nopl 0x0(%rax,%rax,1): the 5 bytes the jump replaces */
    "  movl $1, %eax\n"
    "  nopw 0x0(%rax,%rax,1)\n"
    "  nopw 0x0(%rax,%rax,1)\n"
    "  nopw 0x0(%rax,%rax,1)\n"
    "  .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"
    "  .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"
    "  ret\n"
    ".size bench_target, .-bench_target\n"
    ".globl bench_other\n"
    ".type bench_other,@function\n"
    ".p2align 5\n"
    "bench_other:\n"
    "  .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"
    "  movl $2, %eax\n"
    "  nopw 0x0(%rax,%rax,1)\n"
    "  nopw 0x0(%rax,%rax,1)\n"
    "  nopw 0x0(%rax,%rax,1)\n"
    "  .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"
    "  .byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"
    "  ret\n"
    ".size bench_other, .-bench_other\n");

int bench_target(void);
int bench_other(void);

#define MAX_THREADS 64
#define GAP_CHECK_NS 2000

struct slot {
    uint64_t max_stop;  /* largest stop gap since the last report */
    uint64_t max_held;  /* largest held time of a stop gap */
    uint64_t max_raw;   /* largest gap of any kind */
    uint64_t iterations; /* completed loop iterations */
    int last_result;    /* what bench_target() returned last */
    int schedstat_fd;
} __attribute__((aligned(64)));

static struct slot slots[MAX_THREADS];
static int nthreads = 1;
static volatile sig_atomic_t report_requested = 0;

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long voluntary_switches(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_nvcsw;
}

/* run_delay: ns this thread spent runnable but waiting for a CPU (2nd field of schedstat). */
static uint64_t run_delay(int fd) {
    char buf[96];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strchr(buf, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void atomic_max(uint64_t *where, uint64_t value) {
    uint64_t cur = __atomic_load_n(where, __ATOMIC_RELAXED);
    while (value > cur && !__atomic_compare_exchange_n(where, &cur, value, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

static void report(void) {
    /* Wait until every thread has run a whole iteration that began after the request (its count
     * moved by 2): a thread still queued for a CPU (8 spinners on 2 vCPUs) has not yet recorded the
     * end of its stop, and its last bench_target() call may predate the patch. */
    uint64_t seen[MAX_THREADS];
    for (int i = 1; i < nthreads; i++) seen[i] = __atomic_load_n(&slots[i].iterations, __ATOMIC_ACQUIRE);
    uint64_t deadline = now_ns() + 2000000000u;
    int lagging = 0;
    for (int i = 1; i < nthreads; i++) {
        while (__atomic_load_n(&slots[i].iterations, __ATOMIC_ACQUIRE) < seen[i] + 2 && now_ns() < deadline) sched_yield();
        if (__atomic_load_n(&slots[i].iterations, __ATOMIC_ACQUIRE) < seen[i] + 2) lagging++;
    }
    uint64_t stop = 0, held = 0, raw = 0;
    int stopped = 0, patched = 0;
    for (int i = 0; i < nthreads; i++) {
        /* exchange, not load+store: a thread may be raising its max right now */
        uint64_t s = __atomic_exchange_n(&slots[i].max_stop, 0, __ATOMIC_RELAXED);
        uint64_t h = __atomic_exchange_n(&slots[i].max_held, 0, __ATOMIC_RELAXED);
        uint64_t r = __atomic_exchange_n(&slots[i].max_raw, 0, __ATOMIC_RELAXED);
        if (s > 0) stopped++;
        if (s > stop) stop = s;
        if (h > held) held = h;
        if (r > raw) raw = r;
        if (__atomic_load_n(&slots[i].last_result, __ATOMIC_RELAXED) == 2) patched++;
    }
    const char *state = patched == 0 ? "original" : patched == nthreads ? "patched" : "mixed";
    printf("gap_ns=%llu held_ns=%llu raw_ns=%llu stopped=%d state=%s lagging=%d\n", (unsigned long long)stop,
           (unsigned long long)held, (unsigned long long)raw, stopped, state, lagging);
    fflush(stdout);
}

static void spin(int index) {
    struct slot *s = &slots[index];
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/schedstat", (long)syscall(SYS_gettid));
    s->schedstat_fd = open(path, O_RDONLY | O_CLOEXEC);
    long nvcsw = voluntary_switches();
    uint64_t delay = s->schedstat_fd >= 0 ? run_delay(s->schedstat_fd) : 0;
    uint64_t prev = now_ns();
    int armed = 0;
    for (;;) {
        uint64_t t = now_ns();
        uint64_t gap = t - prev;
        if (gap > GAP_CHECK_NS) {
            atomic_max(&s->max_raw, gap);
            long v = voluntary_switches();
            uint64_t d = s->schedstat_fd >= 0 ? run_delay(s->schedstat_fd) : 0;
            if (v != nvcsw) {
                uint64_t queued = d - delay;
                uint64_t held = queued < gap ? gap - queued : 0;
                atomic_max(&s->max_stop, gap);
                atomic_max(&s->max_held, held);
            }
            nvcsw = v;
            delay = d;
            /* The bookkeeping is not part of the next gap, unless a stop landed inside it. */
            uint64_t t2 = now_ns();
            if (t2 - t > 50000) {
                long v2 = voluntary_switches();
                uint64_t d2 = s->schedstat_fd >= 0 ? run_delay(s->schedstat_fd) : 0;
                if (v2 != v) {
                    uint64_t queued = d2 - d;
                    atomic_max(&s->max_stop, t2 - t);
                    atomic_max(&s->max_held, queued < t2 - t ? t2 - t - queued : 0);
                }
                nvcsw = v2;
                delay = d2;
                t2 = now_ns();
            }
            t = t2;
        }
        prev = t;
        __atomic_store_n(&s->last_result, bench_target(), __ATOMIC_RELAXED);
        __atomic_store_n(&s->iterations, s->iterations + 1, __ATOMIC_RELEASE);
        /* Report at the end of the iteration AFTER the one that saw the request: that iteration began
         * after the signal, so it has recorded this thread's stop and called the current code. */
        if (index == 0 && report_requested && ++armed == 2) {
            armed = 0;
            report_requested = 0;
            report();
            nvcsw = voluntary_switches(); /* printing may block: not a stop */
            if (s->schedstat_fd >= 0) delay = run_delay(s->schedstat_fd);
            prev = now_ns();
        }
    }
}

static void *worker(void *arg) {
    spin((int)(intptr_t)arg);
    return NULL;
}

static void on_usr1(int sig) {
    (void)sig;
    report_requested = 1;
}

int main(int argc, char **argv) {
    nthreads = argc > 1 ? atoi(argv[1]) : 1;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    unsigned lifetime = argc > 2 ? (unsigned)atoi(argv[2]) : 300;
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(lifetime ? lifetime : 300); /* SIGALRM's default action ends a forgotten victim */

    /* Workers block SIGUSR1 (they inherit this mask); main unblocks it once they exist. */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);

    for (int i = 0; i < nthreads; i++) slots[i].last_result = 0;
    for (int i = 1; i < nthreads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)(intptr_t)i) != 0) { perror("pthread_create"); return 1; }
    }
    for (int i = 1; i < nthreads; i++)
        while (__atomic_load_n(&slots[i].last_result, __ATOMIC_RELAXED) == 0) usleep(1000);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    puts("ready");
    fflush(stdout);
    spin(0);
    return 0;
}
