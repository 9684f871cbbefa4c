// ifunc_calls: calls libc's wcsncmp through its PLT. Debian's wcsncmp is an IFUNC that libc itself
// never calls: libc.so.6 has no R_X86_64_IRELATIVE slot for it, so the implementation the process
// uses is only known from this program's GOT slot once bound (ifunc_now binds at start, -z now), or
// from the resolver (ifunc_lazy, -z lazy: unbound until the first call).
// argv [1] N (100) [2] lifetime s. Prints `ready`; for every stdin line `go` calls
// wcsncmp(a, b, 8) N times on two equal wide strings in different buffers and prints
// `wcsncmp N sum S`, S the sum of the results (0; 7N under `graft patch … --return 7`);
// `eof` and exit 0 at end of input.
#include "victim.h"
#include <wchar.h>

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 100);
    victim_begin((unsigned)victim_arg(argc, argv, 2, 120));
    wchar_t a[16], b[16];
    wcscpy(a, L"graftifunc");
    wcscpy(b, L"graftifunc");
    wchar_t *volatile pa = a, *volatile pb = b;
    victim_ready();
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (strcmp(line, "go\n") != 0 && strcmp(line, "go") != 0) continue;
        long sum = 0;
        for (long i = 0; i < n; i++) sum += wcsncmp(pa, pb, 8);
        printf("wcsncmp %ld sum %ld\n", n, sum);
    }
    puts("eof");
    return 0;
}
