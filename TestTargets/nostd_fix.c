/* libnostd.so: a self-contained shared library (-shared -fPIC -nostdlib -fno-stack-protector: no
 * DT_NEEDED, no libc), which graft maps into a process itself (SelfContainedLoader): static programs
 * and Go have no ld.so to dlopen with. Every kind of relocation such a library has:
 * - R_X86_64_RELATIVE: `discount_table`, a pointer to a static table, and the .init_array entry;
 * - R_X86_64_64: `nostd_ops`, pointers to global (interposable) functions, in RELRO;
 * - R_X86_64_JUMP_SLOT: calls of the global nostd_helper and nostd_discount go through the PLT;
 * - R_X86_64_GLOB_DAT: globals read through the GOT (nostd_calls, nostd_loaded, nostd_ops), and the
 *   target's `price_base`, a weak reference: static_loop defines it, go_loop does not (then 0).
 * A constructor sets nostd_loaded to 0x600d. Values (with price_base 100):
 * nostd_helper(x) = 2x + 1, nostd_twice(x) = 4x + 2, nostd_discount(i) = {0, 5, 10, 20}[i & 3],
 * nostd_op(0, x) = 2x + 1, nostd_op(1, x) = -x, nostd_base_address() = &price_base,
 * nostd_price(qty) = price_base + 10 qty - nostd_discount(qty) (price(3) = 130 → 110), counted in nostd_calls. */
#define EXPORT __attribute__((visibility("default"), noinline, used))

extern int price_base __attribute__((weak));

static const int discounts[4] = { 0, 5, 10, 20 };
/* volatile: gcc would otherwise fold the pointer away, and with it the RELATIVE relocation. */
static const int *volatile discount_table = discounts;

int nostd_loaded;
int nostd_calls;

EXPORT int nostd_helper(int x) { return 2 * x + 1; }
EXPORT int nostd_negate(int x) { return -x; }

int (*const nostd_ops[2])(int) = { nostd_helper, nostd_negate };

EXPORT int nostd_twice(int x) { return nostd_helper(x) + nostd_helper(x); }
EXPORT int nostd_discount(int i) { return discount_table[i & 3]; }
EXPORT int nostd_op(int which, int x) { return nostd_ops[which & 1](x); }
EXPORT int *nostd_base_address(void) { return &price_base; }

EXPORT int nostd_price(int qty) {
    nostd_calls++;
    int base = &price_base ? price_base : 0;
    return base + qty * 10 - nostd_discount(qty);
}

__attribute__((constructor)) static void nostd_init(void) { nostd_loaded = 0x600d; }

/* Replacements that call the original through their trampoline (include/graft.h):
 * static_loop's price → nostd_fixed_price: price(3) + 1 (131); go_loop's main.a → nostd_go_a:
 * a() + 40 (41). Go calls the replacement with its register ABI: no arguments, the result in rax. */
#include <graft.h>
GRAFT_ORIGINAL(int, nostd_fixed_price, (int qty));
EXPORT int nostd_fixed_price(int qty) { return graft_original_nostd_fixed_price(qty) + 1; }
GRAFT_ORIGINAL(long, nostd_go_a, (void));
EXPORT long nostd_go_a(void) { return graft_original_nostd_go_a() + 40; }
