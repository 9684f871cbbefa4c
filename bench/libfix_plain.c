/* libfix_plain: for bench/inject.sh, a fixed_price() that does not call the original price().
 * gdb can load a library and write a jump, but it builds no trampoline, so examples/inject/libfix.c's
 * fixed_price (which calls graft_original_fixed_price, NULL until graft sets it) would crash the
 * target at its first call. This one computes price_service's price() without the bug itself (its
 * unit price, 10, written in); graft is measured with it too (`graft-plain`: no trampoline), so the
 * gdb row has a like-for-like graft row. Build: cc -O2 -shared -fPIC. */
#include <unistd.h>

int fixed_price(int quantity) { return quantity * 10; }

__attribute__((constructor)) static void loaded(void) {
    static const char line[] = "libfix_plain: loaded\n";
    (void)!write(1, line, sizeof line - 1);
}
