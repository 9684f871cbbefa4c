/* branch_back main: prints `value %d` of loop_into_head(10) (= 55) every argv[1] ms (default 10).
 * argv: [1] interval ms, [2] lifetime s (default 120). */
#include "victim.h"

int loop_into_head(int n);

int main(int argc, char **argv) {
    long interval = victim_arg(argc, argv, 1, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    for (;;) {
        printf("value %d\n", loop_into_head(10));
        victim_sleep_ms(interval);
    }
}
