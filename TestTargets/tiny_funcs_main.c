/* tiny_funcs main: prints `tiny %d %d %d` of tiny_xor(), tiny_four(), tiny_six() every argv[1] ms
 * (default 10), after calling tiny_ret(). argv: [1] interval ms, [2] lifetime s (default 120). */
#include "victim.h"

void tiny_ret(void);
int tiny_xor(void);
int tiny_four(void);
int tiny_six(void);

int main(int argc, char **argv) {
    long interval = victim_arg(argc, argv, 1, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    for (;;) {
        tiny_ret();
        int x = tiny_xor();
        int f = tiny_four();
        int s = tiny_six();
        printf("tiny %d %d %d\n", x, f, s);
        victim_sleep_ms(interval);
    }
}
