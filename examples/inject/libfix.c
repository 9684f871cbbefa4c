/* The example library of docs/inject.md: fixes price() of a running price service without
 * restarting it. Build: cc -shared -fPIC -O2 -I include -o libfix.so examples/inject/libfix.c
 *   graft patch -p PID price --library ./libfix.so --to fixed_price
 * fixed_price() calls the original price() through graft_original_fixed_price (graft points it at
 * a trampoline running price()'s first instructions), logs what it corrects, and returns the fix. */
#include <graft.h>
#include <stdio.h>
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

__attribute__((constructor)) static void loaded(void) {
    static const char line[] = "libfix: loaded\n";
    (void)!write(1, line, sizeof line - 1);
}
