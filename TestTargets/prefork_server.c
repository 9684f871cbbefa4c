/* prefork_server: a pre-fork server in miniature (nginx, apache, gunicorn): a master forks N workers,
 * and SIGHUP re-forks them (the old ones get SIGTERM and are reaped, new ones are forked from the
 * master as it is now: a patch in the master is inherited by the new workers).
 * Every process calls `int handle(void)` (returns 1) every interval and prints one line, in one
 * write: `master <pid> v=<handle()>` or `worker <pid> v=<handle()>`.
 * The master prints `ready`, then `workers <pid> <pid> ...` (also after each reload, as
 * `reloaded <pid> <pid> ...`). Workers die with their master (PR_SET_PDEATHSIG) and exit on SIGTERM.
 * argv: [1] workers (default 2), [2] interval ms (default 50), [3] lifetime s (default 120). */
#include "victim.h"
#include <signal.h>
#include <sys/wait.h>

#define USED __attribute__((noinline, used))
#define MAX_WORKERS 16

volatile int prefork_zero = 0;
static volatile sig_atomic_t reload = 0;

USED int handle(void) {
    volatile int z = prefork_zero;
    int r = 1 + z * 3;
    r += (z << 4) ^ (z & 0x55);
    r -= prefork_zero * 7;
    return r;
}

static void on_hup(int sig) { (void)sig; reload = 1; }

static void say(const char *role) {
    char line[96];
    int n = snprintf(line, sizeof line, "%s %d v=%d\n", role, (int)getpid(), handle());
    if (write(1, line, (size_t)n) < 0) _exit(3);
}

static pid_t spawn_worker(long interval) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    signal(SIGHUP, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
    for (;;) {
        say("worker");
        victim_sleep_ms(interval);
    }
}

static void announce(const char *what, pid_t *workers, long count) {
    char line[256];
    int n = snprintf(line, sizeof line, "%s", what);
    for (long i = 0; i < count; i++) n += snprintf(line + n, sizeof line - (size_t)n, " %d", (int)workers[i]);
    n += snprintf(line + n, sizeof line - (size_t)n, "\n");
    if (write(1, line, (size_t)n) < 0) _exit(3);
}

int main(int argc, char **argv) {
    long count = victim_arg(argc, argv, 1, 2);
    long interval = victim_arg(argc, argv, 2, 50);
    if (count < 1) count = 1;
    if (count > MAX_WORKERS) count = MAX_WORKERS;
    victim_begin((unsigned)victim_arg(argc, argv, 3, VICTIM_DEFAULT_LIFETIME));
    struct sigaction action = { 0 };
    action.sa_handler = on_hup;
    sigaction(SIGHUP, &action, NULL);
    pid_t workers[MAX_WORKERS];
    victim_ready();
    for (long i = 0; i < count; i++) workers[i] = spawn_worker(interval);
    announce("workers", workers, count);
    for (;;) {
        if (reload) {
            reload = 0;
            for (long i = 0; i < count; i++) kill(workers[i], SIGTERM);
            for (long i = 0; i < count; i++) while (waitpid(workers[i], NULL, 0) < 0 && errno == EINTR) {}
            for (long i = 0; i < count; i++) workers[i] = spawn_worker(interval);
            announce("reloaded", workers, count);
        }
        say("master");
        victim_sleep_ms(interval);
    }
}
