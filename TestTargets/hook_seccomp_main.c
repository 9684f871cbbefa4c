/* hook_seccomp main: hook_shapes.S's shapes in a process under a seccomp filter.
 * argv: [1] action (kill | trap | errno | allow) [2] N calls (100) [3] lifetime s (120)
 * [4] K (0): first install K filters that allow everything, so the rule is in filter K+1 (the
 * newest; a tracer reading only the oldest filters would miss it).
 * Before `ready` it installs (no_new_privs + SECCOMP_SET_MODE_FILTER) a filter whose only rule is:
 * mmap with PROT_EXEC in its protection -> the action (SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_TRAP,
 * SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ALLOW); every other call is allowed. The victim itself
 * never maps executable memory after that, so only a tracer's remote mmap of an r-x scratch page
 * meets the rule. After `go`: N times shape_riprel(i) (first instruction rip-relative: a hook must
 * run it out of line, from a scratch page) and shape_push(i); prints `seccomp done A B` (A = the sum
 * of shape_riprel = N(N-1)/2 + 3N, B = shape_push's = N(N-1)/2 + 2N; N = 100: `seccomp done 5250
 * 5150`) and exits 0. Killed by its filter: SIGSYS (trap) or SIGSYS-kill (kill): the tests see it. */
#include "victim.h"
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>

int shape_riprel(int x);
int shape_push(int x);

static void install_allow_all(void) {
    struct sock_filter code[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
    struct sock_fprog prog = { .len = 1, .filter = code };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        perror("hook_seccomp: seccomp (allow-all)");
        exit(2);
    }
}

static void install(const char *action) {
    unsigned int ret;
    if (strcmp(action, "kill") == 0) ret = SECCOMP_RET_KILL_PROCESS;
    else if (strcmp(action, "trap") == 0) ret = SECCOMP_RET_TRAP;
    else if (strcmp(action, "errno") == 0) ret = SECCOMP_RET_ERRNO | EPERM;
    else if (strcmp(action, "allow") == 0) ret = SECCOMP_RET_ALLOW;
    else { fprintf(stderr, "hook_seccomp: unknown action %s\n", action); exit(2); }
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 2),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, ret),
    };
    struct sock_fprog prog = { .len = sizeof code / sizeof code[0], .filter = code };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        perror("hook_seccomp: seccomp");
        exit(2);
    }
}

int main(int argc, char **argv) {
    const char *action = argc > 1 ? argv[1] : "kill";
    long n = victim_arg(argc, argv, 2, 100);
    victim_begin((unsigned)victim_arg(argc, argv, 3, VICTIM_DEFAULT_LIFETIME));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) { perror("hook_seccomp: no_new_privs"); exit(2); }
    for (long k = victim_arg(argc, argv, 4, 0); k > 0; k--) install_allow_all();
    install(action);
    victim_ready();
    victim_wait_for_go("hook_seccomp");
    long a = 0, b = 0;
    for (long i = 0; i < n; i++) {
        a += shape_riprel((int)i);
        b += shape_push((int)i);
    }
    printf("seccomp done %ld %ld\n", a, b);
    fflush(stdout);
    return 0;
}
