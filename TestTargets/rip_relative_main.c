/* rip_relative main: prints `rip %d` of rip_first() (= 42) every argv[1] ms (default 10).
 * argv: [1] interval ms, [2] lifetime s (default 120). */
#include "victim.h"

int rip_first(void);

int main(int argc, char **argv) {
    long interval = victim_arg(argc, argv, 1, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    for (;;) {
        printf("rip %d\n", rip_first());
        victim_sleep_ms(interval);
    }
}
