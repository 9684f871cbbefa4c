// ifunc_own: calls own_pick, an IFUNC of a library of our own (libownifunc.so), built -z lazy so
// the call's GOT slot is unbound until the first call. argv [1] N (100) [2] lifetime s. Prints
// `ready`; for every stdin line `go` calls own_pick(i) N times and prints `own N sum S` (S = the
// sum of i + 1); `eof` and exit 0 at end of input.
#include "victim.h"

int own_pick(int x);

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 100);
    victim_begin((unsigned)victim_arg(argc, argv, 2, 120));
    victim_ready();
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "go", 2) != 0) continue;
        long sum = 0;
        for (long i = 0; i < n; i++) sum += own_pick((int)i);
        printf("own %ld sum %ld\n", n, sum);
        fflush(stdout);
    }
    printf("eof\n");
    return 0;
}
