/* blocking_read: the main thread blocks in read(0, …); a second thread blocks in nanosleep(argv[1] s,
 * default 10). A remote syscall injected into either must not make the blocked call fail with EINTR.
 *   after each read:       `read <rc> errno <errno> <data>` (data with trailing whitespace trimmed;
 *                          ` <data>` is omitted when empty), e.g. `read 6 errno 0 hello`
 *                          (newlines inside the data are shown as `|`)
 *   on end of file:        `read 0 errno 0`, then `eof`, then exit 0
 *   on another error:      that line, then exit 1 (EINTR is printed and the read retried)
 *   each nanosleep return: `slept rc <rc> errno <errno>` (then it sleeps again)
 * argv: [1] nanosleep s (default 10), [2] lifetime s (default 120). */
#include "victim.h"
#include <pthread.h>

static long nap_seconds = 10;

static void *napper(void *arg) {
    (void)arg;
    for (;;) {
        struct timespec ts = { nap_seconds, 0 };
        errno = 0;
        int rc = nanosleep(&ts, NULL);
        int e = rc == 0 ? 0 : errno;
        printf("slept rc %d errno %d\n", rc, e);
    }
    return NULL;
}

int main(int argc, char **argv) {
    nap_seconds = victim_arg(argc, argv, 1, 10);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    pthread_t t;
    if (pthread_create(&t, NULL, napper, NULL) != 0) { perror("pthread_create"); return 1; }
    victim_ready();
    for (;;) {
        char buf[4096];
        errno = 0;
        ssize_t n = read(0, buf, sizeof buf - 1);
        int e = n < 0 ? errno : 0;
        size_t len = n > 0 ? (size_t)n : 0;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' || buf[len - 1] == '\t')) len--;
        buf[len] = '\0';
        for (size_t i = 0; i < len; i++) if (buf[i] == '\n') buf[i] = '|'; /* one output line per read */
        if (len > 0) printf("read %zd errno %d %s\n", n, e, buf);
        else printf("read %zd errno %d\n", n, e);
        if (n == 0) {
            puts("eof");
            fflush(stdout);
            _exit(0);
        }
        if (n < 0 && e != EINTR) return 1; /* stdin unusable: do not spin */
    }
}
