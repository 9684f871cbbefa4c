/* static_loop: a statically linked program (gcc -static: no ld.so, no DT_NEEDED), the target of the
 * self-contained library mapper. `int price(int qty)` returns price_base + 10 * qty (130 for 3);
 * the loop prints `price=%d` of price(3) every argv[1] ms (default 10), so a patch that sends price
 * to a mapped library's function shows in the output. `price_base` (100) is a global the library
 * libnostd.so refers to by name (static executables keep .symtab). argv: [1] interval ms, [2] lifetime s. */
#include "victim.h"

int price_base = 100;

__attribute__((noinline, used)) int price(int qty) {
    volatile int q = qty;
    return price_base + 10 * q;
}

int main(int argc, char **argv) {
    long interval = victim_arg(argc, argv, 1, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    for (;;) {
        printf("price=%d\n", price(3));
        victim_sleep_ms(interval);
    }
}
