/* libgotlib.so: the second module of got_victim; its own calls to write() go through its own GOT. */
#include <stdio.h>
#include <unistd.h>

void lib_say(long n) {
    char line[64];
    int length = snprintf(line, sizeof line, "lib %ld\n", n);
    if (write(1, line, (size_t)length) < 0) _exit(1);
}
