// vdso_calls: calls the vDSO's functions through libc. argv [1] N (100) [2] lifetime s.
// Prints `ready`; after a stdin line `go` calls gettimeofday, clock_gettime(CLOCK_MONOTONIC) and
// time(NULL) N times each (libc's gettimeofday and time are IFUNCs that resolve to the vDSO;
// clock_gettime calls the vDSO through a pointer), prints `vdso N ok` (each result checked
// against the others: a broken hook shows as `vdso N bad`), exit 0.
#include "victim.h"
#include <sys/time.h>
#include <time.h>

int main(int argc, char **argv) {
    long n = victim_arg(argc, argv, 1, 100);
    victim_begin((unsigned)victim_arg(argc, argv, 2, 120));
    victim_ready();
    victim_wait_for_go("vdso_calls");
    int bad = 0;
    for (long i = 0; i < n; i++) {
        struct timeval tv;
        struct timespec ts;
        if (gettimeofday(&tv, 0) != 0 || clock_gettime(CLOCK_REALTIME, &ts) != 0) bad = 1;
        time_t t = time(0);
        // time() reads the coarse clock, which may still show the previous second for a tick after
        // gettimeofday shows the next: allow one second behind. A broken hook returns garbage.
        if (t + 1 < tv.tv_sec || t - tv.tv_sec > 2 || ts.tv_sec < tv.tv_sec || ts.tv_sec - tv.tv_sec > 2) bad = 1;
    }
    printf("vdso %ld %s\n", n, bad ? "bad" : "ok");
    return 0;
}
