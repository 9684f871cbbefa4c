/* relocate_heads main: prints `heads A B C D E F G H` every 10 ms, the results of relocate_heads.S's
 * functions for x = 5, then h_jcc(-3) (its branch taken) (untouched: heads 47 12 10 8 9 10 15 -1).
 * argv: [1] lifetime s (120). */
#include "victim.h"

int h_rip_load(int), h_rip_lea(int), h_jcc(int), h_jmp8(int), h_jmp32(int), h_call(int), h_endbr(int);

int main(int argc, char **argv) {
    victim_begin((unsigned)victim_arg(argc, argv, 1, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    for (;;) {
        int x = 5;
        printf("heads %d %d %d %d %d %d %d %d\n", h_rip_load(x), h_rip_lea(x), h_jcc(x), h_jmp8(x), h_jmp32(x), h_call(x),
               h_endbr(x), h_jcc(-3));
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
}
