/* hook_onestop: the minimal C baseline for graft's persistent hooks (bench/hooks.sh): ONE ptrace stop
 * per hit, no single-step, no window in which the breakpoint is missing.
 *
 *   hook_onestop PID ADDR SECONDS [COUNTFILE]      e.g. hook_onestop 4242 0x55d0c0de1550 3 /tmp/c
 *
 * ADDR must hold `push %rbp` (0x55), as bench/hook_victim.c's bench_f does. The tool:
 *   1. PTRACE_SEIZE (O_TRACECLONE) + PTRACE_INTERRUPT every thread of /proc/PID/task, re-reading the
 *      directory until a pass finds no new thread, and waits for each stop;
 *   2. writes int3 (0xcc) over the 0x55 with PEEKTEXT/POKETEXT, reads the victim's call count, prints
 *      `armed`, and PTRACE_CONTs every thread;
 *   3. waitpid(-1, __WALL) loop (fine in a standalone tool: it is the only waiter in its process). On a
 *      SIGTRAP with rip == ADDR+1 (the trap leaves rip after the int3) it EMULATES the displaced
 *      `push %rbp` — rsp -= 8, POKEDATA rbp at [rsp]; rip is already ADDR+1, the next instruction — and
 *      PTRACE_CONTs: GETREGS + POKEDATA + SETREGS + CONT, nothing else. Clone events add the new thread;
 *      other SIGTRAPs and signals go back to the target;
 *   4. after SECONDS (or SIGINT/SIGTERM) interrupts every thread, completes any hit that raced the
 *      interrupt (including one whose SIGTRAP is still queued behind the interrupt stop: see stop_all),
 *      restores the byte, reads the call count again, and detaches every thread.
 * Prints one JSON line at the end:
 *   {"tool":"onestop","hits":H,"calls":C,"missed":C-H,"threads":T,"armed_ns":N,"foreign_traps":F,
 *    "drained_traps":Q}   (Q: hits found queued behind the teardown's interrupt stop)
 * calls/missed only with COUNTFILE (bench/hook_victim.c's per-thread counters, read while every thread
 * is stopped). A thread's count lags its call (the increment follows the return), so a tool that sees
 * every call reports |missed| <= T.
 *
 * bench/hook_rearm.c is this file built with HOOK_REARM: the classic remove / step / re-arm hook
 * (what gdb does), to show what it costs and how many calls other threads make past it meanwhile.
 * Only on_hit() and the teardown's handling of a racing hit differ.
 *
 * bench/hook_hwstop.c is this file built with HOOK_HW: the same one stop per hit with the breakpoint in
 * debug register DR0 (POKEUSER DR0 = ADDR, DR7 = L0 execute, on every thread and every new one) instead
 * of an int3: no byte changes; the trap comes BEFORE the instruction with rip == ADDR and RF set by the
 * kernel, so a hit is just PTRACE_CONT. The baseline for `graft hook --hardware` (issue 13). */
#define _GNU_SOURCE
#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/time.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef HOOK_REARM
#define TOOL "rearm"
#elif defined(HOOK_HW)
#define TOOL "hwstop"
#else
#define TOOL "onestop"
#endif

#define MAX_THREADS 1024
#define COUNTER_SLOTS 64 /* as in hook_victim.c: 64 threads, one 64-byte slot each */

struct thread {
    pid_t tid;
    int stopped;
    int pending_signal; /* to give back at detach */
    int gone;
};

static struct thread th[MAX_THREADS];
static int nth, nalive;
static pid_t pid;
static uint64_t addr;
static long orig_word;
static long trap_word __attribute__((unused)); /* not with HOOK_HW */
static uint64_t hits, foreign_traps, drained_traps;
static volatile uint64_t *counters;
static volatile sig_atomic_t stop_flag;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "hook_" TOOL ": %s: %s\n", what, strerror(errno));
    /* Best effort: write the original byte back through any thread that accepts it (one in ptrace-stop).
     * A benchmark tool, not graft: it does not stop the others first. */
    if (orig_word)
        for (int i = 0; i < nth; i++)
            if (!th[i].gone && ptrace(PTRACE_POKETEXT, th[i].tid, (void *)addr, (void *)orig_word) == 0) break;
    exit(1);
}

#ifdef HOOK_HW
#define HIT_RIP (addr) /* a debug-register trap comes before the instruction */
#else
#define HIT_RIP (addr + 1) /* an int3 trap leaves rip after the int3 */
#endif

static int find(pid_t tid) {
    for (int i = 0; i < nth; i++)
        if (th[i].tid == tid) return i;
    return -1;
}

static int add(pid_t tid) {
    if (nth == MAX_THREADS) {
        errno = EMFILE;
        die("too many threads");
    }
    th[nth] = (struct thread){.tid = tid};
    nalive++;
    return nth++;
}

static void mark_gone(int i) {
    if (!th[i].gone) {
        th[i].gone = 1;
        nalive--;
    }
}

/* A thread to write memory through when every thread is stopped (the leader may have exited). */
static pid_t poke_tid(void) {
    for (int i = 0; i < nth; i++)
        if (!th[i].gone) return th[i].tid;
    return pid;
}

static uint64_t victim_calls(void) {
    uint64_t sum = 0;
    if (counters)
        for (int i = 0; i < COUNTER_SLOTS; i++) sum += counters[i * 8];
    return sum;
}

static void cont(pid_t tid, int sig) {
    if (ptrace(PTRACE_CONT, tid, 0, (void *)(long)sig) != 0 && errno != ESRCH) die("PTRACE_CONT");
}

/* --- attach: every thread stopped ----------------------------------------------------------------- */

/* Waits for the first stop of th[i] after PTRACE_INTERRUPT (or auto-attach by a clone). */
static void wait_first_stop(int i) {
    int status;
    while (waitpid(th[i].tid, &status, __WALL) < 0)
        if (errno != EINTR) die("waitpid");
    if (!WIFSTOPPED(status)) {
        mark_gone(i);
        return;
    }
    th[i].stopped = 1;
    int event = status >> 16;
    if (event == PTRACE_EVENT_CLONE) {
        unsigned long child;
        if (ptrace(PTRACE_GETEVENTMSG, th[i].tid, 0, &child) == 0 && find((pid_t)child) < 0) {
            int j = add((pid_t)child);
            wait_first_stop(j);
        }
    } else if (event == 0) {
        th[i].pending_signal = WSTOPSIG(status);
    }
}

static void attach_all(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    for (;;) {
        int added = 0;
        DIR *dir = opendir(path);
        if (!dir) die(path);
        struct dirent *e;
        while ((e = readdir(dir))) {
            pid_t tid = (pid_t)atoi(e->d_name);
            if (tid <= 0 || find(tid) >= 0) continue;
            if (ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)PTRACE_O_TRACECLONE) != 0) {
                if (errno == ESRCH) continue; /* exited meanwhile */
                die("PTRACE_SEIZE");
            }
            int i = add(tid);
            if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0) die("PTRACE_INTERRUPT");
            wait_first_stop(i);
            added++;
        }
        closedir(dir);
        if (!added) break;
    }
}

/* --- one hit ---------------------------------------------------------------------------------------- */

#ifdef HOOK_HW
/* DR0 = ADDR, DR7 = L0 (execute, length 1) on one thread: a clone starts with no debug registers. */
static void arm_thread(pid_t tid, int on) {
    if (on && ptrace(PTRACE_POKEUSER, tid, (void *)offsetof(struct user, u_debugreg[0]), (void *)addr) != 0) {
        if (errno == ESRCH) return;
        die("PTRACE_POKEUSER DR0");
    }
    if (ptrace(PTRACE_POKEUSER, tid, (void *)offsetof(struct user, u_debugreg[7]), (void *)(long)(on ? 1 : 0)) != 0) {
        if (errno == ESRCH) return;
        die("PTRACE_POKEUSER DR7");
    }
}

/* Nothing to emulate: rip == ADDR, RF set, the instruction runs when the thread goes on. */
static void on_hit(int i, struct user_regs_struct *regs) {
    (void)regs;
    hits++;
    cont(th[i].tid, 0);
}
#elif !defined(HOOK_REARM)
/* One stop per hit: do what `push %rbp` would have done. The trap left rip at ADDR+1, which is exactly
 * the next instruction. */
static void emulate_push_rbp(pid_t tid, struct user_regs_struct *regs) {
    regs->rsp -= 8;
    if (ptrace(PTRACE_POKEDATA, tid, (void *)regs->rsp, (void *)regs->rbp) != 0) die("PTRACE_POKEDATA");
    if (ptrace(PTRACE_SETREGS, tid, 0, regs) != 0) die("PTRACE_SETREGS");
}

static void on_hit(int i, struct user_regs_struct *regs) {
    emulate_push_rbp(th[i].tid, regs);
    hits++;
    cont(th[i].tid, 0);
}
#else
/* The classic way: put the original byte back, rewind, single-step the real instruction, put the int3
 * back. While the byte is original, every OTHER thread runs through bench_f unseen. */
static void on_hit(int i, struct user_regs_struct *regs) {
    pid_t tid = th[i].tid;
    /* POKETEXT through the stopped thread: the request needs a tracee in ptrace-stop, and the others run. */
    if (ptrace(PTRACE_POKETEXT, tid, (void *)addr, (void *)orig_word) != 0) die("PTRACE_POKETEXT");
    regs->rip = addr;
    if (ptrace(PTRACE_SETREGS, tid, 0, regs) != 0) die("PTRACE_SETREGS");
    int sig = 0;
    for (;;) {
        if (ptrace(PTRACE_SINGLESTEP, tid, 0, (void *)(long)sig) != 0) die("PTRACE_SINGLESTEP");
        int status;
        while (waitpid(tid, &status, __WALL) < 0)
            if (errno != EINTR) die("waitpid (step)");
        if (!WIFSTOPPED(status)) {
            mark_gone(i);
            break;
        }
        if (WSTOPSIG(status) == SIGTRAP) break; /* the step is done */
        sig = (status >> 16) == 0 ? WSTOPSIG(status) : 0; /* a signal arrived first: deliver it, step again */
    }
    /* (A thread that exits during its step would leave no stopped thread to write through: the victim's
     * threads never exit, so this tool just stops there.) */
    if (ptrace(PTRACE_POKETEXT, tid, (void *)addr, (void *)trap_word) != 0) die("PTRACE_POKETEXT (re-arm)");
    hits++;
    if (!th[i].gone) cont(tid, 0);
}
#endif

/* --- the event loop --------------------------------------------------------------------------------- */

static void handle(pid_t tid, int status) {
    int i = find(tid);
    if (i < 0) i = add(tid); /* a new thread's first stop can come before its parent's clone event */
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
        mark_gone(i);
        return;
    }
    if (!WIFSTOPPED(status)) return;
    int sig = WSTOPSIG(status), event = status >> 16;
    if (event == PTRACE_EVENT_CLONE) {
        unsigned long child;
        if (ptrace(PTRACE_GETEVENTMSG, tid, 0, &child) == 0 && find((pid_t)child) < 0) add((pid_t)child);
        cont(tid, 0);
    } else if (event != 0) {
#ifdef HOOK_HW
        arm_thread(tid, 1); /* a new thread's first stop: give it DR0 (again, harmlessly, otherwise) */
#endif
        cont(tid, 0); /* PTRACE_EVENT_STOP: a new thread's first stop, or a leftover interrupt */
    } else if (sig == SIGTRAP) {
        struct user_regs_struct regs;
        if (ptrace(PTRACE_GETREGS, tid, 0, &regs) != 0) {
            if (errno == ESRCH) return;
            die("PTRACE_GETREGS");
        }
        if (regs.rip == HIT_RIP) {
            on_hit(i, &regs);
        } else {
            foreign_traps++;
            cont(tid, SIGTRAP); /* not ours: the target's own */
        }
    } else {
        cont(tid, sig);
    }
}

/* Is a SIGTRAP queued for this thread (not yet dequeued: int3 raises it with force_sig, per thread)? */
static int sigtrap_pending(pid_t tid) {
    siginfo_t si[16];
    struct __ptrace_peeksiginfo_args args = {.off = 0, .flags = 0, .nr = 16};
    long n = ptrace(PTRACE_PEEKSIGINFO, tid, &args, si);
    for (long k = 0; k < n; k++)
        if (si[k].si_signo == SIGTRAP) return 1;
    return 0;
}

/* Stops every thread (PTRACE_INTERRUPT), completing a hit that races the interrupt without resuming it. */
static void stop_all(void) {
    for (int i = 0; i < nth; i++) {
        th[i].stopped = 0;
        if (!th[i].gone && ptrace(PTRACE_INTERRUPT, th[i].tid, 0, 0) != 0 && errno == ESRCH) mark_gone(i);
    }
    for (int i = 0; i < nth; i++) { /* nth grows if a clone event arrives */
        while (!th[i].gone && !th[i].stopped) {
            int status;
            pid_t tid = th[i].tid;
            if (waitpid(tid, &status, __WALL) < 0) {
                if (errno == EINTR) continue;
                die("waitpid (stop)");
            }
            if (!WIFSTOPPED(status)) {
                mark_gone(i);
                break;
            }
            th[i].stopped = 1;
            int sig = WSTOPSIG(status), event = status >> 16;
            if (event == PTRACE_EVENT_CLONE) {
                unsigned long child;
                if (ptrace(PTRACE_GETEVENTMSG, tid, 0, &child) == 0 && find((pid_t)child) < 0) add((pid_t)child);
            } else if (event == 0 && sig == SIGTRAP) {
                struct user_regs_struct regs;
                if (ptrace(PTRACE_GETREGS, tid, 0, &regs) == 0 && regs.rip == HIT_RIP) {
                    hits++;
#ifdef HOOK_HW
                    /* rip == ADDR: the call runs its first instruction after detach, DR7 cleared */
#elif !defined(HOOK_REARM)
                    emulate_push_rbp(tid, &regs); /* the call goes on after detach, from ADDR+1 */
#else
                    regs.rip = addr; /* rewind: it runs the restored push after detach */
                    if (ptrace(PTRACE_SETREGS, tid, 0, &regs) != 0) die("PTRACE_SETREGS");
#endif
                } else {
                    th[i].pending_signal = SIGTRAP;
                }
            } else if (event == 0) {
                th[i].pending_signal = sig;
            } else if (sigtrap_pending(tid)) {
                /* The interrupt stop came first, but the thread had already executed the int3: the kernel
                 * reports a pending PTRACE_INTERRUPT (JOBCTL_TRAP_STOP) before it dequeues signals, so the
                 * int3's SIGTRAP is still queued. Detached now, the thread would take that SIGTRAP untraced
                 * and the process would die of it. Resume it: it stops at once with the SIGTRAP (no user
                 * code runs in between), which the next pass of this loop handles as a hit. */
                drained_traps++;
                th[i].stopped = 0;
                cont(tid, 0);
            }
            /* The interrupt still pending on a thread stopped otherwise is dropped by PTRACE_DETACH. */
        }
    }
}

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: hook_" TOOL " PID ADDR SECONDS [COUNTFILE]\n");
        return 2;
    }
    pid = (pid_t)atoi(argv[1]);
    addr = strtoull(argv[2], NULL, 0);
    double seconds = atof(argv[3]);
    if (argc == 5) {
        int fd = open(argv[4], O_RDONLY);
        if (fd < 0) die(argv[4]);
        void *p = mmap(NULL, COUNTER_SLOTS * 64, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) die("mmap");
        counters = p;
        close(fd);
    }

    /* No SA_RESTART: the signal must end a blocking waitpid. The timer keeps firing every 50 ms after the
     * deadline in case it lands between the flag check and waitpid. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    attach_all();
    errno = 0;
    orig_word = ptrace(PTRACE_PEEKTEXT, poke_tid(), (void *)addr, 0);
    if (errno) die("PTRACE_PEEKTEXT");
    if ((orig_word & 0xff) != 0x55) {
        fprintf(stderr, "hook_" TOOL ": %#llx starts with %#lx, not push %%rbp (0x55)\n",
                (unsigned long long)addr, orig_word & 0xff);
        for (int i = 0; i < nth; i++)
            if (!th[i].gone) ptrace(PTRACE_DETACH, th[i].tid, 0, (void *)(long)th[i].pending_signal);
        return 1;
    }
#ifdef HOOK_HW
    for (int i = 0; i < nth; i++)
        if (!th[i].gone) arm_thread(th[i].tid, 1);
    orig_word = 0; /* die() writes no byte back: none changed */
#else
    trap_word = (orig_word & ~0xffL) | 0xcc;
    if (ptrace(PTRACE_POKETEXT, poke_tid(), (void *)addr, (void *)trap_word) != 0) die("PTRACE_POKETEXT");
#endif
    uint64_t calls0 = victim_calls(), t0 = now_ns();
    printf("armed pid=%d threads=%d\n", (int)pid, nalive);
    fflush(stdout);

    struct itimerval it = {.it_value = {.tv_sec = (time_t)seconds, .tv_usec = (suseconds_t)((seconds - (time_t)seconds) * 1e6)},
                           .it_interval = {.tv_sec = 0, .tv_usec = 50000}};
    if (it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0) it.it_value.tv_usec = 1;
    setitimer(ITIMER_REAL, &it, NULL);

    for (int i = 0; i < nth; i++)
        if (!th[i].gone) {
            int sig = th[i].pending_signal;
            th[i].pending_signal = 0;
            th[i].stopped = 0;
            cont(th[i].tid, sig);
        }

    while (!stop_flag && nalive > 0) {
        int status;
        pid_t tid = waitpid(-1, &status, __WALL);
        if (tid < 0) {
            if (errno == EINTR) continue;
            if (errno == ECHILD) break;
            die("waitpid");
        }
        handle(tid, status);
    }

    if (nalive > 0) {
        stop_all();
#ifdef HOOK_HW
        for (int i = 0; i < nth; i++)
            if (!th[i].gone) arm_thread(th[i].tid, 0);
#else
        if (ptrace(PTRACE_POKETEXT, poke_tid(), (void *)addr, (void *)orig_word) != 0) die("PTRACE_POKETEXT (restore)");
#endif
    }
    uint64_t calls1 = victim_calls(), t1 = now_ns();
    for (int i = 0; i < nth; i++)
        if (!th[i].gone) ptrace(PTRACE_DETACH, th[i].tid, 0, (void *)(long)th[i].pending_signal);
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);

    if (counters)
        printf("{\"tool\":\"%s\",\"hits\":%llu,\"calls\":%llu,\"missed\":%lld,\"threads\":%d,\"armed_ns\":%llu,"
               "\"foreign_traps\":%llu,\"drained_traps\":%llu}\n",
               TOOL, (unsigned long long)hits, (unsigned long long)(calls1 - calls0),
               (long long)(calls1 - calls0) - (long long)hits, nalive, (unsigned long long)(t1 - t0),
               (unsigned long long)foreign_traps, (unsigned long long)drained_traps);
    else
        printf("{\"tool\":\"%s\",\"hits\":%llu,\"threads\":%d,\"armed_ns\":%llu,\"foreign_traps\":%llu,\"drained_traps\":%llu}\n",
               TOOL, (unsigned long long)hits, nalive, (unsigned long long)(t1 - t0), (unsigned long long)foreign_traps,
               (unsigned long long)drained_traps);
    return 0;
}
