// CGraftShim: only what Swift cannot import directly.
// - ptrace(2) is variadic in glibc: Swift cannot call it. graft_ptrace() takes fixed arguments.
// - WIFSTOPPED & co. are macros: exported as static inline functions.
// - gettid, tgkill, process_vm_readv and the CPU_SET macros are not visible through Glibc's module.
// <sys/ptrace.h> stays out of this header (its variadic prototype and enum clash with <linux/ptrace.h>);
// the request and option numbers are repeated here and checked with _Static_assert in shim.c.
#ifndef GRAFT_SHIM_H
#define GRAFT_SHIM_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>

enum {
    GRAFT_PTRACE_PEEKTEXT = 1,
    GRAFT_PTRACE_POKETEXT = 4,
    GRAFT_PTRACE_PEEKUSER = 3,
    GRAFT_PTRACE_POKEUSER = 6,
    GRAFT_PTRACE_CONT = 7,
    GRAFT_PTRACE_KILL = 8,
    GRAFT_PTRACE_SINGLESTEP = 9,
    GRAFT_PTRACE_GETREGS = 12,
    GRAFT_PTRACE_SETREGS = 13,
    GRAFT_PTRACE_GETFPREGS = 14,
    GRAFT_PTRACE_SETFPREGS = 15,
    GRAFT_PTRACE_ATTACH = 16,
    GRAFT_PTRACE_DETACH = 17,
    GRAFT_PTRACE_SYSCALL = 24,
    GRAFT_PTRACE_SETOPTIONS = 0x4200,
    GRAFT_PTRACE_GETEVENTMSG = 0x4201,
    GRAFT_PTRACE_GETSIGINFO = 0x4202,
    GRAFT_PTRACE_SETSIGINFO = 0x4203,
    GRAFT_PTRACE_SEIZE = 0x4206,
    GRAFT_PTRACE_INTERRUPT = 0x4207,
    GRAFT_PTRACE_LISTEN = 0x4208,
    GRAFT_PTRACE_SECCOMP_GET_FILTER = 0x420c,
};

enum {
    GRAFT_PTRACE_O_TRACESYSGOOD = 1,
    GRAFT_PTRACE_O_TRACEFORK = 1 << 1,
    GRAFT_PTRACE_O_TRACEVFORK = 1 << 2,
    GRAFT_PTRACE_O_TRACECLONE = 1 << 3,
    GRAFT_PTRACE_O_TRACEEXEC = 1 << 4,
    GRAFT_PTRACE_O_TRACEVFORKDONE = 1 << 5,
    GRAFT_PTRACE_O_TRACEEXIT = 1 << 6,
    GRAFT_PTRACE_O_EXITKILL = 1 << 20,
};

enum {
    GRAFT_PTRACE_EVENT_FORK = 1,
    GRAFT_PTRACE_EVENT_VFORK = 2,
    GRAFT_PTRACE_EVENT_CLONE = 3,
    GRAFT_PTRACE_EVENT_EXEC = 4,
    GRAFT_PTRACE_EVENT_VFORK_DONE = 5,
    GRAFT_PTRACE_EVENT_EXIT = 6,
    GRAFT_PTRACE_EVENT_STOP = 128,
};

/// waitpid's __WALL: wait for clone children (threads) too.
enum { GRAFT_WALL = 0x40000000 };

/// ptrace(request, pid, addr, data). Returns the kernel's result, or -1 with errno set. For PEEK*
/// requests use graft_peek*, which tell a -1 word from an error.
long graft_ptrace(long request, pid_t pid, uint64_t addr, uint64_t data);
/// PTRACE_PEEKTEXT: 0 and the word in *out, or -1 with errno set.
int graft_peektext(pid_t pid, uint64_t addr, uint64_t *out);
/// rip alone, with PTRACE_PEEKUSER / POKEUSER: ~0.55 µs each here, against ~1.2 µs for GETREGS and
/// ~1.6 µs for SETREGS (the whole regset). 0, or -1 with errno.
int graft_get_pc(pid_t pid, uint64_t *out);
int graft_set_pc(pid_t pid, uint64_t pc);
/// PTRACE_PEEKUSER at a byte offset into struct user.
int graft_peekuser(pid_t pid, uint64_t offset, uint64_t *out);
/// Byte offset of u_debugreg[index] in struct user (hardware breakpoints, DR0–DR7).
uint64_t graft_debugreg_offset(int index);
int graft_getregs(pid_t pid, struct user_regs_struct *regs);
int graft_setregs(pid_t pid, const struct user_regs_struct *regs);
int graft_geteventmsg(pid_t pid, unsigned long *msg);
/// waitpid(pid, status, __WALL | flags), retried on EINTR.
pid_t graft_waitpid(pid_t pid, int *status, int flags);

/// Field 39 (processor: the CPU it last ran on) of /proc/PID/task/TID/stat, or -1. Plain C: the hook
/// engine's CPU follower reads it every 2 ms on the hit path.
int graft_thread_last_cpu(pid_t pid, pid_t tid);
/// The machine's idle (idle + iowait) and total jiffies so far, summed over CPUs (/proc/stat's
/// first line). 0 on success.
int graft_cpu_jiffies(uint64_t *idle, uint64_t *total);
/// Thread `tid` of process `pid` so far: ns run on a CPU and ns waited on a run queue
/// (/proc/PID/task/TID/schedstat). 0 on success.
int graft_thread_schedstat(pid_t pid, pid_t tid, int64_t *on_cpu, int64_t *run_delay);

/// How many CPUs thread `tid` (0: the caller) may run on, 0 on error.
int graft_affinity_count(pid_t tid);

/// The thread ids in /proc/PID/task, unsorted: how many there are (those beyond `capacity` are
/// counted, not stored), or -1 with errno. Plain C so a stop window's re-listing costs ~ the syscalls.
int graft_list_tasks(pid_t pid, pid_t *tids, int capacity);

/// Collects thread `tid`'s exit report only (waitid WEXITED | WNOHANG | __WALL: a ptrace-stop is left
/// for the event loop): tid with a waitpid-style *status, 0 when it has not exited, -1 with errno.
pid_t graft_wait_exit_nohang(pid_t tid, int *status);

/// waitpid(-1, status, __WALL | __WNOTHREAD | (nohang ? WNOHANG : 0)), NOT retried on EINTR: a signal
/// sent to the tracer thread (graft_wake_thread) makes a blocked wait return -1/EINTR.
pid_t graft_waitpid_any(int *status, int nohang);
/// PTRACE_GETSIGINFO, only si_code: 0 and *code, or -1 with errno.
int graft_siginfo_code(pid_t tid, int *code);
/// Installs a no-op handler (no SA_RESTART) for the wake signal, so a blocked wait returns EINTR.
int graft_install_wake_handler(void);
/// Sends the wake signal to thread `tid` of this process.
int graft_wake_thread(pid_t tid);
/// Unblocks the wake signal in the calling thread.
void graft_unblock_wake_signal(void);
/// fork + (child: default signal dispositions, empty mask, raise(SIGSTOP), execve). Returns the child's
/// pid (stopped before execve) or -1. `path` must be resolved already (no PATH search after fork).
pid_t graft_spawn_stopped(const char *path, char *const argv[], char *const envp[]);
pid_t graft_gettid(void);
int graft_tgkill(pid_t tgid, pid_t tid, int sig);
/// process_vm_readv for one contiguous range. Returns bytes read or -1 with errno.
ssize_t graft_process_vm_read(pid_t pid, void *local, uint64_t remote, size_t length);
/// Pin the calling thread to one CPU (sched_setaffinity with CPU_SET); -1 with errno on failure.
int graft_pin_current_thread(int cpu);
/// SCHED_FIFO priority 1 (enable) or SCHED_OTHER for the calling thread only; needs CAP_SYS_NICE
/// (or RLIMIT_RTPRIO). 0 or -1 with errno.
int graft_set_realtime_policy(int enable);
/// SCHED_IDLE (enable) or SCHED_OTHER for the calling thread only. 0 or -1 with errno.
int graft_set_idle_policy(int enable);
/// Puts thread `tid` back in SCHED_OTHER if it is in SCHED_IDLE (from another thread: a starved
/// idle-class thread cannot do it itself). 1 when it changed it, 0 when it was not idle, -1 on error.
int graft_unidle_thread(pid_t tid);
/// 1 when the calling thread is in SCHED_IDLE.
int graft_current_policy_is_idle(void);
/// A CPU affinity mask (a cpu_set_t: 1024 CPUs), opaque to Swift.
typedef struct { uint64_t bits[16]; } graft_cpu_mask;
/// Thread `tid`'s affinity mask. 0 on success.
int graft_get_affinity(pid_t tid, graft_cpu_mask *mask);
/// Sets thread `tid`'s affinity mask. 0 on success.
int graft_set_affinity(pid_t tid, const graft_cpu_mask *mask);
/// How many CPUs `mask` allows; whether it allows `cpu` (1/0).
int graft_mask_count(const graft_cpu_mask *mask);
int graft_mask_has(const graft_cpu_mask *mask, int cpu);
/// Allows thread `tid` only `cpu`. 0 on success.
int graft_pin_thread(pid_t tid, int cpu);
/// 1 when thread `tid` is allowed exactly `cpu` and no other, 0 when not, -1 on error.
int graft_thread_pinned_to(pid_t tid, int cpu);
/// The CPU the calling thread runs on now.
int graft_current_cpu(void);
/// Monotonic clock in nanoseconds.
uint64_t graft_monotonic_ns(void);

/// Installs handlers for SIGINT, SIGTERM, SIGHUP and SIGQUIT that only record the signal, so an
/// operation that must not be cut in half (a multi-word code write) finishes first. With
/// `hold_stop`, SIGTSTP is recorded apart (a suspended graft would keep the target stopped; with
/// `announce_stop` a notice for a hook or trace session is written to stderr when it comes).
/// SIGTTOU, SIGTTIN and SIGPIPE are ignored meanwhile; a signal ignored when this is first called
/// stays ignored, except SIGINT, SIGTERM and SIGQUIT with `catch_ignored` (a hook or trace session
/// must end on them however it was started; the four termination signals are also unblocked on the
/// calling thread then). The restore puts back the dispositions found then. 0 on success.
int graft_defer_termination_signals(int hold_stop, int announce_stop, int catch_ignored);
/// 1 when stdout is a pipe whose reader has gone (`graft hook … | head`): a session's output then
/// goes nowhere, and with SIGPIPE ignored nothing else would end it.
int graft_stdout_closed(void);
/// The first deferred termination signal received, or 0.
int graft_deferred_signal(void);
/// The first SIGTSTP received while deferred, or 0.
int graft_deferred_stop_signal(void);
/// Puts the default disposition back for the deferred signals.
void graft_restore_termination_signals(void);

static inline int graft_wifstopped(int status) { return WIFSTOPPED(status); }
static inline int graft_wifexited(int status) { return WIFEXITED(status); }
static inline int graft_wifsignaled(int status) { return WIFSIGNALED(status); }
static inline int graft_wstopsig(int status) { return WSTOPSIG(status); }
static inline int graft_wexitstatus(int status) { return WEXITSTATUS(status); }
static inline int graft_wtermsig(int status) { return WTERMSIG(status); }
static inline int graft_wcoredump(int status) { return WCOREDUMP(status); }
/// The PTRACE_EVENT_* number in a stop status (status >> 16), 0 for a plain stop.
static inline int graft_wevent(int status) { return (status >> 16) & 0xff; }

/// The thread count of the process whose /proc/PID/task is open as `task_fd` (fstat: st_nlink - 2), or -1.
int graft_task_count(int task_fd);

#endif

/* The C++ toolchain's demangler (libstdc++'s __cxa_demangle, which the Swift runtime links): the
 * demangled form of an Itanium name (C++, and Rust's legacy mangling), malloc'd, or NULL when
 * `name` is not one. The caller frees it. */
char *graft_demangle(const char *name);

/* The Swift runtime's demangler (swift_demangle, in libswiftCore, which every Swift program links):
 * a Swift symbol's readable name, malloc'd, or NULL. The caller frees it. */
char *graft_swift_demangle(const char *name);

/* binutils' libiberty demangler (rust_demangle): a Rust symbol's path, v0 (`_RNvCs…_3foo3bar`) or
 * legacy (`_ZN3foo3bar17h0123456789abcdefE`, without the hash), malloc'd, or NULL when `name` is not
 * one. The caller frees it. */
char *graft_rust_demangle(const char *name);
