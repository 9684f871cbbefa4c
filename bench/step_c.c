/* step_c: the minimal C baseline for graft trace's single-step speed (bench/trace.sh).
 *
 *   step_c [--no-regs] PID TID SECONDS        e.g. step_c 4242 4243 3
 *
 *   1. PTRACE_SEIZE + PTRACE_INTERRUPT the ONE thread TID of process PID (no other thread is touched;
 *      no options), waitpid(TID, __WALL) for its stop;
 *   2. loop for SECONDS: PTRACE_SINGLESTEP; waitpid(TID, __WALL); PTRACE_GETREGS (a tracer that
 *      reads the PC of every step, as any tracer that reports where it is must; --no-regs skips it:
 *      the bare stop/resume cost); count the step. A stop that is not our SIGTRAP (a signal for the
 *      target) is handed back with the next PTRACE_SINGLESTEP and not counted. Nothing else per step:
 *      no disassembly, no symbol lookup, no output. The clock is read every 64 steps;
 *   3. PTRACE_DETACH (with any signal still owed) and print
 *        steps N seconds S        (S = the loop's own elapsed time, CLOCK_MONOTONIC)
 *      plus, with the registers, `last_pc 0x…` on a second line.
 * SIGINT/SIGTERM end the loop early (then it detaches and prints as usual). The tool and the target
 * may be pinned to the same CPU by the caller (taskset): see bench/trace.sh. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;
static void on_stop(int sig) { (void)sig; stop_flag = 1; }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(void) {
    fprintf(stderr, "usage: step_c [--no-regs] PID TID SECONDS\n");
    exit(2);
}

int main(int argc, char **argv) {
    int regs = 1, i = 1;
    if (i < argc && strcmp(argv[i], "--no-regs") == 0) { regs = 0; i++; }
    if (argc - i != 3) usage();
    pid_t pid = (pid_t)strtol(argv[i], NULL, 10);
    pid_t tid = (pid_t)strtol(argv[i + 1], NULL, 10);
    double seconds = strtod(argv[i + 2], NULL);
    if (pid <= 0 || tid <= 0 || !(seconds > 0)) usage();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: a waitpid in progress returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d", (int)pid, (int)tid);
    if (access(path, F_OK) != 0) { fprintf(stderr, "step_c: no thread %d in process %d\n", tid, pid); return 1; }
    if (ptrace(PTRACE_SEIZE, tid, 0, 0) != 0) { perror("step_c: PTRACE_SEIZE"); return 1; }
    if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) { perror("step_c: PTRACE_INTERRUPT"); return 1; }
    int status, sig = 0;
    for (;;) { /* the interrupt stop (SIGTRAP | PTRACE_EVENT_STOP << 8); a signal stop may come first:
                * hand the signal to the target and wait on (the interrupt is still pending) */
        if (waitpid(tid, &status, __WALL) < 0) {
            if (errno == EINTR) continue;
            perror("step_c: waitpid");
            return 1;
        }
        if (!WIFSTOPPED(status)) { fprintf(stderr, "step_c: the thread ended\n"); return 1; }
        if (status >> 16 == PTRACE_EVENT_STOP) break;
        ptrace(PTRACE_CONT, tid, 0, (void *)(intptr_t)WSTOPSIG(status));
    }

    uint64_t steps = 0, foreign = 0, last_pc = 0;
    uint64_t start = now_ns(), deadline = start + (uint64_t)(seconds * 1e9), end = start;
    int gone = 0;
    struct user_regs_struct r;
    while (!stop_flag) {
        if (ptrace(PTRACE_SINGLESTEP, tid, 0, (void *)(intptr_t)sig) != 0) { perror("step_c: PTRACE_SINGLESTEP"); gone = 1; break; }
        sig = 0;
        if (waitpid(tid, &status, __WALL) < 0) {
            if (errno == EINTR && stop_flag) { /* the step is under way: collect its stop before detaching */
                while (waitpid(tid, &status, __WALL) < 0 && errno == EINTR) {}
            } else if (errno != EINTR) { perror("step_c: waitpid"); gone = 1; break; }
        }
        if (!WIFSTOPPED(status)) { fprintf(stderr, "step_c: the thread ended\n"); gone = 1; break; }
        if (WSTOPSIG(status) == SIGTRAP && status >> 16 == 0) {
            steps++;
            if (regs) {
                if (ptrace(PTRACE_GETREGS, tid, 0, &r) != 0) { perror("step_c: PTRACE_GETREGS"); gone = 1; break; }
                last_pc = r.rip;
            }
        } else if (status >> 16 == 0) {
            sig = WSTOPSIG(status); /* the target's signal: deliver it with the next step */
            foreign++;
        }
        if ((steps & 63) == 0 && (end = now_ns()) >= deadline) break;
    }
    end = now_ns();
    if (!gone && ptrace(PTRACE_DETACH, tid, 0, (void *)(intptr_t)sig) != 0) perror("step_c: PTRACE_DETACH");
    printf("steps %llu seconds %.6f\n", (unsigned long long)steps, (double)(end - start) / 1e9);
    if (regs) printf("last_pc 0x%llx\n", (unsigned long long)last_pc);
    if (foreign) fprintf(stderr, "step_c: %llu stop(s) for the target's signals (not counted)\n", (unsigned long long)foreign);
    return gone ? 1 : 0;
}
