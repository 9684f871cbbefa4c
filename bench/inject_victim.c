/* inject_victim: the target of bench/inject.sh's per-call measurement.
 *
 *   inject_victim [SECONDS]     (default 600, then it exits by itself)
 *
 * One thread calls work() in a loop, each call's argument the previous call's result, and about every
 * 100 ms prints how long a call took on average since the last line:
 *   ns_per_call 1.842 calls 54263808 entry 55
 * `entry` is work()'s first byte as it is in memory when the line is printed (0x55 = `push %rbp`, the
 * original; 0xe9 = a jmp rel32 graft wrote), so a reading is known to be of the original or of the
 * redirected function. Readings are made with CLOCK_MONOTONIC around batches of 2^16 calls.
 *
 * work() is `return x * 3 + 1` with a frame-pointer prologue, written in assembly (as bench_f in
 * hook_victim.c) so that its head is the common `push %rbp; mov %rsp,%rbp` whatever the compiler (gcc
 * 12 drops a leaf function's frame even with -fno-omit-frame-pointer): graft's 5-byte jump overwrites
 * `push %rbp; mov %rsp,%rbp; lea…`'s first instructions, which go into the trampoline. An external asm
 * symbol cannot be inlined or cloned: every iteration really calls the function that gets patched.
 *
 * Prints `ready pid=<PID> work=0x<address>` first. Exits 0 on SIGTERM. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__asm__(
    ".text\n"
    ".globl work\n"
    ".type work,@function\n"
    ".p2align 4\n"
    "work:\n"
    "  push %rbp\n"
    "  mov %rsp, %rbp\n"
    "  lea 1(%rdi,%rdi,2), %eax\n"
    "  pop %rbp\n"
    "  ret\n"
    ".size work, .-work\n");
int work(int x);

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
    long seconds = argc > 1 ? strtol(argv[1], NULL, 10) : 600;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGTERM, on_term);
    alarm(seconds > 0 ? (unsigned)seconds : 600);
    printf("ready pid=%d work=%p\n", (int)getpid(), (void *)work);
    volatile int sink = 0;
    int x = 1;
    while (!stop) {
        uint64_t start = now_ns(), end;
        uint64_t calls = 0;
        do {
            for (int i = 0; i < (1 << 16); i++) x = work(x);
            calls += 1 << 16;
            end = now_ns();
        } while (end - start < 100000000u && !stop);
        sink = x;
        printf("ns_per_call %.3f calls %llu entry %02x\n", (double)(end - start) / (double)calls,
               (unsigned long long)calls, *(volatile unsigned char *)(uintptr_t)work);
    }
    (void)sink;
    return 0;
}
