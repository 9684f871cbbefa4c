/* hook_fork: a hooked process that forks, vforks or execs. int hook_f(int x) returns x + 1.
 * A fork child inherits every int3 in its copy of the text; unless they are removed it dies of
 * SIGTRAP, which the parent reports as `child killed by signal 5`.
 * stdin: one line `go` starts (other lines are ignored; EOF before `go`: exit 2).
 * argv: [1] mode, [2] lifetime s (default 120).
 *   "" or "fork": hook_f(1); fork(); the child calls hook_f(10), hook_f(11), hook_f(12), prints
 *       `child done` and exits 0; the parent waits for it (waitpid on the child's pid) and prints
 *       `child status <exit code>` or `child killed by signal <N>`, calls hook_f(2), prints
 *       `parent done`, then sleeps until killed (or its lifetime ends: SIGALRM).
 *       Calls: parent 2 (both after `go`), child 3.
 *   "vfork": hook_f(1); vfork_true(): vfork(), the child only execs /bin/true (it shares the
 *       parent's memory, int3 bytes included, until then); the parent prints `child status 0` (or as
 *       above) and vfork_true returns 0; then it calls hook_f(2), prints `parent done` and sleeps like fork mode.
 *   "exec": hook_f(1); prints `exec now`; execs /proc/self/exe with argv[1] = "after-exec": the
 *       new image (same pid, no `ready`, no `go`) prints `after exec`, calls hook_f(20) and
 *       hook_f(21), prints `after done` and exits 0.
 *   "thread-exec": four threads call hook_f in a loop; after 200 ms a fifth thread prints
 *       `exec now` and execs as in "exec" mode (the kernel kills the other threads at the exec). */
#include "victim.h"
#include <pthread.h>
#include <sys/wait.h>

#define USED __attribute__((noinline, used))

volatile int hook_fork_zero = 0;

USED int hook_f(int x) {
    volatile int frame = x; /* a stack slot: the classic push %rbp; mov %rsp,%rbp head */
    (void)frame;
    return x + 1 + hook_fork_zero;
}

static void report_child(pid_t child) {
    int status;
    pid_t r;
    while ((r = waitpid(child, &status, 0)) == -1 && errno == EINTR) {}
    if (r == -1) { perror("waitpid"); exit(1); }
    if (WIFEXITED(status)) printf("child status %d\n", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) printf("child killed by signal %d\n", WTERMSIG(status));
    else printf("child wait status 0x%x\n", status);
}

/* vfork mode: vforks a child that execs /bin/true and reports its status before returning (a call
 * whose return comes after the child's exec). */
USED int vfork_true(void) {
    pid_t child = vfork();
    if (child == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    if (child < 0) { perror("vfork"); exit(1); }
    report_child(child);
    return 0;
}

static const char *exec_lifetime = "120";
static const char *exec_path = "/proc/self/exe";

static void *spinner(void *arg) {
    volatile int sink = 0;
    for (;;) {
        sink += hook_f((int)(long)arg);
        victim_sleep_ms(0);
    }
    return NULL;
}

static void *execer(void *arg) {
    (void)arg;
    victim_sleep_ms(200);
    puts("exec now");
    fflush(stdout);
    execl(exec_path, "hook_fork", "after-exec", exec_lifetime, (char *)NULL);
    perror("execl /proc/self/exe");
    exit(1);
}

static void sleep_forever(void) {
    for (;;) victim_sleep_ms(1000);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    long lifetime = victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME);
    victim_begin((unsigned)lifetime);
    volatile int sink = 0;

    if (strcmp(mode, "after-exec") == 0) {
        puts("after exec");
        sink += hook_f(20);
        sink += hook_f(21);
        puts("after done");
        fflush(stdout);
        return 0;
    }
    int fork_mode = mode[0] == '\0' || strcmp(mode, "fork") == 0;
    int thread_exec = strcmp(mode, "thread-exec") == 0;
    if (!fork_mode && !thread_exec && strcmp(mode, "vfork") != 0 && strcmp(mode, "exec") != 0) {
        fprintf(stderr, "hook_fork: unknown mode %s\n", mode);
        return 2;
    }

    victim_ready();
    victim_wait_for_go("hook_fork");
    sink += hook_f(1);
    fflush(stdout); /* nothing buffered may be inherited by a child or lost by exec */

    if (thread_exec) {
        static char lifetime_text[32];
        snprintf(lifetime_text, sizeof lifetime_text, "%ld", lifetime);
        exec_lifetime = lifetime_text;
        pthread_t t;
        for (long i = 0; i < 4; i++) pthread_create(&t, NULL, spinner, (void *)i);
        pthread_create(&t, NULL, execer, NULL);
        sleep_forever();
    }

    if (strcmp(mode, "exec") == 0) {
        puts("exec now");
        fflush(stdout);
        char lifetime_arg[32];
        snprintf(lifetime_arg, sizeof lifetime_arg, "%ld", lifetime);
        execl("/proc/self/exe", argv[0], "after-exec", lifetime_arg, (char *)NULL);
        perror("execl /proc/self/exe");
        return 1;
    }

    if (fork_mode) {
        pid_t child = fork();
        if (child == 0) {
            sink += hook_f(10);
            sink += hook_f(11);
            sink += hook_f(12);
            puts("child done");
            fflush(stdout);
            _exit(0);
        }
        if (child < 0) { perror("fork"); return 1; }
        report_child(child);
    } else {
        sink += vfork_true();
    }
    sink += hook_f(2);
    puts("parent done");
    fflush(stdout);
    sleep_forever();
}
