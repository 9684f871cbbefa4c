/* The example library of docs/inject.md: fixes price() of a running price service without
 * restarting it. Build: cc -shared -fPIC -O2 -I include -o libfix.so examples/inject/libfix.c
 *   graft patch -p PID price --library ./libfix.so --to fixed_price
 * fixed_price() calls the original price() through graft_original_fixed_price (graft points it at
 * a trampoline running price()'s first instructions), logs what it corrects, and returns the fix. */
#include <graft.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

GRAFT_ORIGINAL(int, fixed_price, (int quantity));

int fixed_price(int quantity) {
    int total = graft_original_fixed_price(quantity);
    if (total < 0) {
        char line[96];
        int n = snprintf(line, sizeof line, "libfix: price(%d) was %d, corrected to %d\n", quantity, total, -total);
        if (n > 0) (void)!write(1, line, (size_t)n); /* one write: lines from threads do not mix */
        total = -total;
    }
    return total;
}

/* The second example: graft patch -p PID libc:getpid --library ./libfix.so --to my_getpid.
 * Counts the calls and returns what the real getpid() returns. */
GRAFT_ORIGINAL(pid_t, my_getpid, (void));
unsigned long libfix_getpid_calls;

pid_t my_getpid(void) {
    __atomic_add_fetch(&libfix_getpid_calls, 1, __ATOMIC_RELAXED);
    return graft_original_my_getpid();
}

__attribute__((constructor)) static void loaded(void) {
    static const char line[] = "libfix: loaded\n";
    (void)!write(1, line, sizeof line - 1);
}
