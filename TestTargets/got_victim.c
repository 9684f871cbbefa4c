/* got_victim: two modules that call write(): the program prints `main N` and its library
 * libgotlib.so prints `lib N`, both with write(2), every 10 ms; from N = 100 on (about a second
 * after `ready`) the program also prints `ppid P` of getppid(), which it never called before — in
 * the lazily bound build (got_lazy) its GOT slot is not bound until then. Built twice: got_lazy
 * (-z lazy, calls through the PLT: JUMP_SLOT) and got_now (-z now -fno-plt: `call *GOT`, GLOB_DAT).
 * argv: [1] lifetime s (120). */
#include "victim.h"

void lib_say(long n);

int main(int argc, char **argv) {
    victim_begin((unsigned)victim_arg(argc, argv, 1, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    for (long n = 0;; n++) {
        char line[64];
        int length = snprintf(line, sizeof line, "main %ld\n", n);
        if (write(1, line, (size_t)length) < 0) return 1;
        lib_say(n);
        if (n >= 100) {
            length = snprintf(line, sizeof line, "ppid %d\n", (int)getppid());
            if (write(1, line, (size_t)length) < 0) return 1;
        }
        victim_sleep_ms(10);
    }
}
