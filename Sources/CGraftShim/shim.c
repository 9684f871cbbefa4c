#define _GNU_SOURCE
#include "graft_shim.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <stdio.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// The numbers in the header must be the kernel's.
_Static_assert(GRAFT_PTRACE_SEIZE == PTRACE_SEIZE, "PTRACE_SEIZE");
_Static_assert(GRAFT_PTRACE_INTERRUPT == PTRACE_INTERRUPT, "PTRACE_INTERRUPT");
_Static_assert(GRAFT_PTRACE_LISTEN == PTRACE_LISTEN, "PTRACE_LISTEN");
_Static_assert(GRAFT_PTRACE_GETEVENTMSG == PTRACE_GETEVENTMSG, "PTRACE_GETEVENTMSG");
_Static_assert(GRAFT_PTRACE_GETSIGINFO == PTRACE_GETSIGINFO, "PTRACE_GETSIGINFO");
_Static_assert(GRAFT_PTRACE_SETOPTIONS == PTRACE_SETOPTIONS, "PTRACE_SETOPTIONS");
_Static_assert(GRAFT_PTRACE_POKETEXT == PTRACE_POKETEXT, "PTRACE_POKETEXT");
_Static_assert(GRAFT_PTRACE_PEEKTEXT == PTRACE_PEEKTEXT, "PTRACE_PEEKTEXT");
_Static_assert(GRAFT_PTRACE_PEEKUSER == PTRACE_PEEKUSER, "PTRACE_PEEKUSER");
_Static_assert(GRAFT_PTRACE_POKEUSER == PTRACE_POKEUSER, "PTRACE_POKEUSER");
_Static_assert(GRAFT_PTRACE_GETREGS == PTRACE_GETREGS, "PTRACE_GETREGS");
_Static_assert(GRAFT_PTRACE_SETREGS == PTRACE_SETREGS, "PTRACE_SETREGS");
_Static_assert(GRAFT_PTRACE_SINGLESTEP == PTRACE_SINGLESTEP, "PTRACE_SINGLESTEP");
_Static_assert(GRAFT_PTRACE_CONT == PTRACE_CONT, "PTRACE_CONT");
_Static_assert(GRAFT_PTRACE_DETACH == PTRACE_DETACH, "PTRACE_DETACH");
_Static_assert(GRAFT_PTRACE_ATTACH == PTRACE_ATTACH, "PTRACE_ATTACH");
_Static_assert(GRAFT_PTRACE_SYSCALL == PTRACE_SYSCALL, "PTRACE_SYSCALL");
_Static_assert(GRAFT_PTRACE_KILL == PTRACE_KILL, "PTRACE_KILL");
_Static_assert(GRAFT_PTRACE_O_TRACECLONE == PTRACE_O_TRACECLONE, "PTRACE_O_TRACECLONE");
_Static_assert(GRAFT_PTRACE_O_TRACEFORK == PTRACE_O_TRACEFORK, "PTRACE_O_TRACEFORK");
_Static_assert(GRAFT_PTRACE_O_TRACEVFORK == PTRACE_O_TRACEVFORK, "PTRACE_O_TRACEVFORK");
_Static_assert(GRAFT_PTRACE_O_TRACEEXEC == PTRACE_O_TRACEEXEC, "PTRACE_O_TRACEEXEC");
_Static_assert(GRAFT_PTRACE_O_TRACEEXIT == PTRACE_O_TRACEEXIT, "PTRACE_O_TRACEEXIT");
_Static_assert(GRAFT_PTRACE_O_TRACESYSGOOD == PTRACE_O_TRACESYSGOOD, "PTRACE_O_TRACESYSGOOD");
_Static_assert(GRAFT_PTRACE_O_EXITKILL == PTRACE_O_EXITKILL, "PTRACE_O_EXITKILL");
_Static_assert(GRAFT_PTRACE_EVENT_CLONE == PTRACE_EVENT_CLONE, "PTRACE_EVENT_CLONE");
_Static_assert(GRAFT_PTRACE_EVENT_FORK == PTRACE_EVENT_FORK, "PTRACE_EVENT_FORK");
_Static_assert(GRAFT_PTRACE_EVENT_EXEC == PTRACE_EVENT_EXEC, "PTRACE_EVENT_EXEC");
_Static_assert(GRAFT_PTRACE_EVENT_EXIT == PTRACE_EVENT_EXIT, "PTRACE_EVENT_EXIT");
_Static_assert(GRAFT_PTRACE_EVENT_STOP == PTRACE_EVENT_STOP, "PTRACE_EVENT_STOP");
_Static_assert(GRAFT_WALL == __WALL, "__WALL");

long graft_ptrace(long request, pid_t pid, uint64_t addr, uint64_t data) {
    return ptrace((enum __ptrace_request)request, pid, (void *)addr, (void *)data);
}

int graft_get_pc(pid_t pid, uint64_t *out) {
    errno = 0;
    long value = ptrace(PTRACE_PEEKUSER, pid, (void *)offsetof(struct user_regs_struct, rip), 0);
    if (value == -1 && errno != 0) return -1;
    *out = (uint64_t)value;
    return 0;
}

int graft_set_pc(pid_t pid, uint64_t pc) {
    return ptrace(PTRACE_POKEUSER, pid, (void *)offsetof(struct user_regs_struct, rip), (void *)pc) == 0 ? 0 : -1;
}

int graft_peektext(pid_t pid, uint64_t addr, uint64_t *out) {
    errno = 0;
    long word = ptrace(PTRACE_PEEKTEXT, pid, (void *)addr, NULL);
    if (word == -1 && errno != 0) return -1;
    *out = (uint64_t)word;
    return 0;
}

int graft_peekuser(pid_t pid, uint64_t offset, uint64_t *out) {
    errno = 0;
    long word = ptrace(PTRACE_PEEKUSER, pid, (void *)offset, NULL);
    if (word == -1 && errno != 0) return -1;
    *out = (uint64_t)word;
    return 0;
}

uint64_t graft_debugreg_offset(int index) {
    return offsetof(struct user, u_debugreg) + (uint64_t)index * sizeof(((struct user *)0)->u_debugreg[0]);
}

int graft_getregs(pid_t pid, struct user_regs_struct *regs) {
    return (int)ptrace(PTRACE_GETREGS, pid, NULL, regs);
}

int graft_setregs(pid_t pid, const struct user_regs_struct *regs) {
    return (int)ptrace(PTRACE_SETREGS, pid, NULL, (void *)regs);
}

int graft_geteventmsg(pid_t pid, unsigned long *msg) {
    return (int)ptrace(PTRACE_GETEVENTMSG, pid, NULL, msg);
}

pid_t graft_waitpid(pid_t pid, int *status, int flags) {
    pid_t r;
    do {
        r = waitpid(pid, status, __WALL | flags);
    } while (r == -1 && errno == EINTR);
    return r;
}

/* Reads a small /proc file into buf (NUL-terminated): its length, or -1. */
static int read_small(const char *path, char *buf, int size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int n;
    do { n = (int)read(fd, buf, (size_t)size - 1); } while (n < 0 && errno == EINTR);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return n;
}

int graft_thread_last_cpu(pid_t pid, pid_t tid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, (int)tid);
    int n = read_small(path, buf, sizeof buf);
    if (n <= 0) return -1;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* After ") " comes field 3; field 39 is 36 spaces further. */
    int field = 2;
    for (; *p && field < 39; p++) if (*p == ' ') field++;
    if (field != 39 || *p < '0' || *p > '9') return -1;
    int cpu = 0;
    for (; *p >= '0' && *p <= '9'; p++) cpu = cpu * 10 + (*p - '0');
    return cpu;
}

int graft_cpu_jiffies(uint64_t *idle, uint64_t *total) {
    char buf[512];
    if (read_small("/proc/stat", buf, sizeof buf) <= 0) return -1;
    /* "cpu  user nice system idle iowait irq softirq steal guest guest_nice": the machine's sums.
     * guest time is counted in user already; idle = idle + iowait. */
    if (strncmp(buf, "cpu ", 4) != 0) return -1;
    char *p = buf + 4;
    uint64_t fields[8] = {0};
    for (int i = 0; i < 8; i++) {
        while (*p == ' ') p++;
        if (*p < '0' || *p > '9') return -1;
        uint64_t v = 0;
        for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (uint64_t)(*p - '0');
        fields[i] = v;
    }
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++) sum += fields[i];
    *idle = fields[3] + fields[4];
    *total = sum;
    return 0;
}

int graft_thread_schedstat(pid_t pid, pid_t tid, int64_t *on_cpu, int64_t *run_delay) {
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", (int)pid, (int)tid);
    if (read_small(path, buf, sizeof buf) <= 0) return -1;
    /* "on-cpu-ns run-delay-ns timeslices" */
    char *p = buf;
    int64_t values[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        while (*p == ' ') p++;
        if (*p < '0' || *p > '9') return -1;
        for (; *p >= '0' && *p <= '9'; p++) values[i] = values[i] * 10 + (*p - '0');
    }
    *on_cpu = values[0];
    *run_delay = values[1];
    return 0;
}

int graft_list_tasks(pid_t pid, pid_t *tids, int capacity) {
    char path[48];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    if (!dir) return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        if (name[0] < '0' || name[0] > '9') continue;
        long tid = 0;
        for (; *name >= '0' && *name <= '9'; name++) tid = tid * 10 + (*name - '0');
        if (count < capacity) tids[count] = (pid_t)tid;
        count++;
    }
    closedir(dir);
    return count;
}

pid_t graft_wait_exit_nohang(pid_t tid, int *status) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r;
    /* A tracee's ptrace stops are reported whatever the options say (wait_task_stopped): peek
     * first (WNOWAIT) and reap only an exit, leaving a stop queued for the event loop. */
    do {
        r = waitid(P_PID, (id_t)tid, &info, WEXITED | WNOHANG | WNOWAIT | __WALL);
    } while (r == -1 && errno == EINTR);
    if (r != 0) return -1;
    if (info.si_pid == 0) return 0;
    if (info.si_code != CLD_EXITED && info.si_code != CLD_KILLED && info.si_code != CLD_DUMPED) return 0;
    siginfo_t reaped;
    memset(&reaped, 0, sizeof reaped);
    do {
        r = waitid(P_PID, (id_t)tid, &reaped, WEXITED | WNOHANG | __WALL);
    } while (r == -1 && errno == EINTR);
    *status = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8 : (info.si_status & 0x7f);
    return info.si_pid;
}

pid_t graft_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int graft_tgkill(pid_t tgid, pid_t tid, int sig) { return (int)syscall(SYS_tgkill, tgid, tid, sig); }

ssize_t graft_process_vm_read(pid_t pid, void *local, uint64_t remote, size_t length) {
    struct iovec l = {.iov_base = local, .iov_len = length};
    struct iovec r = {.iov_base = (void *)remote, .iov_len = length};
    return process_vm_readv(pid, &l, 1, &r, 1, 0);
}

int graft_pin_current_thread(int cpu) { return graft_pin_thread(0, cpu); }

int graft_current_cpu(void) { return sched_getcpu(); }
_Static_assert(sizeof(graft_cpu_mask) == sizeof(cpu_set_t), "graft_cpu_mask must be a cpu_set_t");
int graft_get_affinity(pid_t tid, graft_cpu_mask *mask) {
    return sched_getaffinity(tid, sizeof(cpu_set_t), (cpu_set_t *)mask);
}
int graft_set_affinity(pid_t tid, const graft_cpu_mask *mask) {
    return sched_setaffinity(tid, sizeof(cpu_set_t), (const cpu_set_t *)mask);
}
int graft_mask_count(const graft_cpu_mask *mask) { return CPU_COUNT((const cpu_set_t *)mask); }
int graft_mask_has(const graft_cpu_mask *mask, int cpu) {
    return cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, (const cpu_set_t *)mask) ? 1 : 0;
}
int graft_pin_thread(pid_t tid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(tid, sizeof(set), &set);
}
int graft_thread_pinned_to(pid_t tid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(tid, sizeof(set), &set) != 0) return -1;
    return CPU_COUNT(&set) == 1 && CPU_ISSET(cpu, &set) ? 1 : 0;
}


int graft_affinity_count(pid_t tid) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(tid, sizeof(set), &set) != 0) return 0;
    return CPU_COUNT(&set);
}

uint64_t graft_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#include <signal.h>
static volatile sig_atomic_t graft_deferred = 0;
static volatile sig_atomic_t graft_deferred_stop = 0;
static int graft_announce_stop = 0;
static const char graft_stop_notice[] =
    "graft: SIGTSTP held: a suspended graft would leave every thread that reaches a breakpoint stopped; Ctrl-C ends the session\n";
static void graft_record_signal(int sig) {
    if (graft_deferred == 0) graft_deferred = sig;
}
static void graft_record_stop(int sig) {
    int saved = errno; /* the handler may interrupt code about to read errno */
    if (graft_deferred_stop == 0) graft_deferred_stop = sig;
    if (graft_announce_stop) {
        ssize_t unused = write(2, graft_stop_notice, sizeof graft_stop_notice - 1);
        (void)unused;
    }
    errno = saved;
}
/* The dispositions found when deferring began, put back by the restore. */
static const int graft_deferred_set[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGTTOU, SIGTTIN, SIGPIPE};
#define GRAFT_DEFERRED_COUNT (sizeof graft_deferred_set / sizeof graft_deferred_set[0])
static struct sigaction graft_saved_actions[GRAFT_DEFERRED_COUNT];
static int graft_actions_saved = 0;

int graft_defer_termination_signals(int hold_stop, int announce_stop, int catch_ignored) {
    if (!graft_actions_saved) {
        for (unsigned i = 0; i < GRAFT_DEFERRED_COUNT; i++) sigaction(graft_deferred_set[i], NULL, &graft_saved_actions[i]);
        graft_actions_saved = 1;
    }
    graft_announce_stop = announce_stop;
    for (unsigned i = 0; i < GRAFT_DEFERRED_COUNT; i++) {
        int sig = graft_deferred_set[i];
        struct sigaction action = {0};
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_RESTART;
        if (sig == SIGTTOU || sig == SIGTTIN || sig == SIGPIPE) {
            /* Ignored, not caught: a background graft writing to its terminal would get SIGTTOU
             * again on every restarted write while it is caught; a closed pipe on stdout makes the
             * write fail with EPIPE instead of killing graft in the middle of its work. */
            action.sa_handler = SIG_IGN;
        } else if (graft_saved_actions[i].sa_handler == SIG_IGN &&
                   !(catch_ignored && (sig == SIGINT || sig == SIGTERM || sig == SIGQUIT))) {
            /* Ignored when graft started: stays ignored. A session (catch_ignored) still ends on
             * SIGINT, SIGTERM and SIGQUIT, which a shell without job control ignores for its
             * background commands (`graft hook … & kill -INT $!`); SIGHUP ignored by nohup stays
             * ignored, as nohup asked. */
            continue;
        } else if (sig == SIGTSTP) {
            if (!hold_stop) continue;
            action.sa_handler = graft_record_stop;
        } else {
            action.sa_handler = graft_record_signal;
        }
        if (sigaction(sig, &action, NULL) != 0) return -1;
    }
    if (catch_ignored) {
        /* A blocked signal would never reach the handler either (a parent may start graft with
         * SIGTERM blocked: Swift programs do). Threads created after this inherit the mask. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGQUIT);
        sigaddset(&set, SIGHUP);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    }
    return 0;
}
int graft_deferred_signal(void) { return graft_deferred; }
int graft_stdout_closed(void) {
    struct pollfd out = {.fd = 1, .events = 0};
    return poll(&out, 1, 0) == 1 && (out.revents & POLLERR) != 0;
}
int graft_deferred_stop_signal(void) { return graft_deferred_stop; }
void graft_restore_termination_signals(void) {
    if (!graft_actions_saved) return;
    for (unsigned i = 0; i < GRAFT_DEFERRED_COUNT; i++) sigaction(graft_deferred_set[i], &graft_saved_actions[i], NULL);
}

pid_t graft_waitpid_any(int *status, int nohang) {
    return waitpid(-1, status, __WALL | __WNOTHREAD | (nohang ? WNOHANG : 0));
}

int graft_siginfo_code(pid_t tid, int *code) {
    siginfo_t info;
    if (ptrace(PTRACE_GETSIGINFO, tid, 0, &info) != 0) return -1;
    *code = info.si_code;
    return 0;
}

/* SIGRTMIN+7: glibc keeps the first two real-time signals for itself; nothing in Swift's runtime,
 * Dispatch or Foundation uses this one. */
#define GRAFT_WAKE_SIGNAL (SIGRTMIN + 7)
static void graft_wake_handler(int sig) { (void)sig; }
int graft_install_wake_handler(void) {
    struct sigaction action = {0};
    action.sa_handler = graft_wake_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; /* no SA_RESTART: the point is to interrupt waitpid */
    return sigaction(GRAFT_WAKE_SIGNAL, &action, NULL);
}
int graft_wake_thread(pid_t tid) { return (int)syscall(SYS_tgkill, getpid(), tid, GRAFT_WAKE_SIGNAL); }
void graft_unblock_wake_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, GRAFT_WAKE_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

pid_t graft_spawn_stopped(const char *path, char *const argv[], char *const envp[]) {
    pid_t child = fork();
    if (child != 0) return child;
    /* Only async-signal-safe calls from here: the parent has other threads. */
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sigaction(sig, &dfl, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    raise(SIGSTOP);
    execve(path, argv, envp);
    _exit(127);
}

int graft_set_realtime_policy(int enable) {
    struct sched_param param = { .sched_priority = enable ? 1 : 0 };
    return sched_setscheduler(0, enable ? SCHED_FIFO : SCHED_OTHER, &param);
}

int graft_set_idle_policy(int enable) {
    struct sched_param param = {0};
    return sched_setscheduler(0, enable ? SCHED_IDLE : SCHED_OTHER, &param);
}

int graft_current_policy_is_idle(void) { return sched_getscheduler(0) == SCHED_IDLE; }

int graft_unidle_thread(pid_t tid) {
    if (sched_getscheduler(tid) != SCHED_IDLE) return 0;
    struct sched_param param = {0};
    return sched_setscheduler(tid, SCHED_OTHER, &param) == 0 ? 1 : -1;
}

/* The number of threads of the process whose /proc/PID/task directory `task_fd` is: procfs gives
 * that directory st_nlink = 2 + nr_threads (proc_task_getattr), so one fstat, no text to format
 * (a pread of /proc/PID/stat costs ~13 µs cold). -1 on error. */
int graft_task_count(int task_fd) {
    struct stat st;
    if (fstat(task_fd, &st) != 0 || st.st_nlink < 2) return -1;
    return (int)(st.st_nlink - 2);
}


extern char *__cxa_demangle(const char *mangled, char *buffer, size_t *length, int *status);

char *graft_demangle(const char *name) {
    int status = 0;
    char *out = __cxa_demangle(name, NULL, NULL, &status);
    if (status != 0) { free(out); return NULL; }
    return out;
}

/* libiberty (binutils' demangler, libiberty-dev): Rust's v0 (`_R…`) and legacy (`_ZN…17h<hash>E`)
 * manglings. DMGL_PARAMS | DMGL_ANSI, as c++filt. NULL when `name` is not a Rust symbol. */
extern char *rust_demangle(const char *mangled, int options);

char *graft_rust_demangle(const char *name) {
    return rust_demangle(name, (1 << 0) | (1 << 1));
}

extern char *swift_demangle(const char *mangled, size_t length, char *output, size_t *outputSize, uint32_t flags);

char *graft_swift_demangle(const char *name) {
    return swift_demangle(name, strlen(name), NULL, NULL, 0);
}
