/* hook_victim: the target of the hook benchmark (bench/hooks.sh).
 *
 *   hook_victim THREADS COUNTFILE [SECONDS [WORK]]   T threads call bench_f() in a tight loop
 *   hook_victim read COUNTFILE                       prints "<total calls> <CLOCK_MONOTONIC ns>" and exits
 *
 * Each worker thread runs `x = bench_f(x); calls++; then WORK multiply-adds on x` forever. Its call
 * count lives in COUNTFILE (created, mmap'd MAP_SHARED, one 64-byte slot per thread so the threads never
 * share a cache line), so the harness and the C hook tools can read how many calls the victim made
 * without stopping or signalling it (a signal would disturb gdb and the ptrace tools). A count lags its
 * call by at most one per thread: the increment comes after the call returns.
 *
 * WORK (default 32, ~40 ns) keeps each thread mostly OUTSIDE bench_f's first bytes. frida writes its
 * 5-byte jump over them while the threads run, and a thread caught between `push %rbp` and the lea then
 * runs half an instruction and crashes (with WORK=0 frida crashed the victim in 2 of 2 runs;
 * ../shared/design.md §4 reports the same of frida on other hot functions). The ptrace tools stop every
 * thread before they write and are unaffected. The work is the same for every tool, and costs far less
 * than any hook.
 *
 * bench_f is `return x * 3 + 1` with a frame-pointer prologue, written in assembly so that its first
 * instruction is `push %rbp` (0x55) whatever the compiler: the one-byte instruction bench/hook_onestop.c
 * emulates. (gcc 12 drops the frame of a leaf function even with -fno-omit-frame-pointer
 * -mno-omit-leaf-frame-pointer, and -fcf-protection would put endbr64 first.) Being an external asm
 * symbol, it cannot be inlined or cloned: every iteration really calls the symbol the tools hook.
 *
 * Prints one line once every thread runs:  ready pid=<PID> bench_f=0x<address> threads=<T>
 * On SIGTERM (or after SECONDS, default 600) prints:  calls=<total> and exits 0. The main thread only
 * waits for that signal; it never calls bench_f. SIGINT is ignored: gdb interrupts its inferior with a
 * SIGINT (to the inferior's process group: hooks.sh starts the victim in a session of its own), and
 * that must not end the victim. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define SLOT 8 /* uint64_t per 64-byte slot */

__asm__(
    ".text\n"
    ".globl bench_f\n"
    ".type bench_f,@function\n"
    ".p2align 4\n"
    "bench_f:\n"
    "  push %rbp\n"                 /* 0x55: what hook_onestop emulates */
    "  mov %rsp, %rbp\n"
    "  lea 1(%rdi,%rdi,2), %eax\n"
    "  pop %rbp\n"
    "  ret\n"
    ".size bench_f, .-bench_f\n");
int bench_f(int x);

static volatile uint64_t *counters;
static volatile int started;
static int work = 32;

static void *worker(void *arg) {
    volatile uint64_t *slot = counters + (uintptr_t)arg * SLOT;
    int x = (int)(uintptr_t)arg;
    uint64_t n = 0;
    __atomic_add_fetch(&started, 1, __ATOMIC_RELEASE);
    for (;;) {
        x = bench_f(x);
        __atomic_store_n(slot, ++n, __ATOMIC_RELAXED);
        for (int k = 0; k < work; k++) x = x * 1103515245 + 12345; /* a dependency chain: not vectorized away */
    }
    return NULL;
}

static uint64_t total(void) {
    uint64_t sum = 0;
    for (int i = 0; i < MAX_THREADS; i++) sum += __atomic_load_n(counters + i * SLOT, __ATOMIC_RELAXED);
    return sum;
}

static void map_counters(const char *path, int create) {
    int fd = open(path, create ? O_RDWR | O_CREAT | O_TRUNC : O_RDONLY, 0644);
    if (fd < 0) { perror(path); exit(1); }
    size_t size = MAX_THREADS * SLOT * sizeof(uint64_t);
    if (create && ftruncate(fd, (off_t)size) != 0) { perror("ftruncate"); exit(1); }
    void *p = mmap(NULL, size, create ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    close(fd);
    counters = p;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "read") == 0) {
        map_counters(argv[2], 0);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        printf("%llu %llu\n", (unsigned long long)total(),
               (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec);
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: hook_victim THREADS COUNTFILE [SECONDS [WORK]] | hook_victim read COUNTFILE\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    if (threads < 1 || threads > MAX_THREADS) { fprintf(stderr, "hook_victim: 1 to %d threads\n", MAX_THREADS); return 2; }
    int seconds = argc > 3 ? atoi(argv[3]) : 600;
    if (argc > 4) work = atoi(argv[4]);
    map_counters(argv[2], 1);

    /* Every thread blocks SIGTERM; the main thread takes it with sigtimedwait. */
    signal(SIGINT, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)(uintptr_t)i) != 0) { perror("pthread_create"); return 1; }
    }
    while (__atomic_load_n(&started, __ATOMIC_ACQUIRE) < threads) usleep(1000);
    printf("ready pid=%d bench_f=%p threads=%d\n", (int)getpid(), (void *)bench_f, threads);
    fflush(stdout);

    /* A ptrace attach or stop can end sigtimedwait early with EINTR: wait again until the deadline. */
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += seconds;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long left = (long long)(end.tv_sec - now.tv_sec) * 1000000000ll + (end.tv_nsec - now.tv_nsec);
        if (left <= 0) break;
        struct timespec limit = {.tv_sec = (time_t)(left / 1000000000ll), .tv_nsec = (long)(left % 1000000000ll)};
        if (sigtimedwait(&set, NULL, &limit) > 0) break;
    }
    printf("calls=%llu\n", (unsigned long long)total());
    fflush(stdout);
    _exit(0);
}
