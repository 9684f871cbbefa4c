/* Shared helpers for the C victims. Everything here is static: nothing in this header is meant to be
 * patched. Every victim calls victim_begin() first: stdout line-buffered, and a watchdog alarm so a
 * victim whose test crashed exits by itself (SIGALRM's default action terminates the process). */
#ifndef GRAFT_VICTIM_H
#define GRAFT_VICTIM_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define VICTIM_DEFAULT_LIFETIME 120 /* seconds */

/* argv[i] as a long, or def when absent/empty. */
static inline long victim_arg(int argc, char **argv, int i, long def) {
    if (i < argc && argv[i][0] != '\0') return strtol(argv[i], NULL, 10);
    return def;
}

/* VICTIM_NOT_DUMPABLE=1 in the environment: prctl(PR_SET_DUMPABLE, 0), for the permission tests. */
static inline void victim_begin(unsigned lifetime_seconds) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *nd = getenv("VICTIM_NOT_DUMPABLE");
    if (nd && nd[0] == '1') prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    alarm(lifetime_seconds > 0 ? lifetime_seconds : VICTIM_DEFAULT_LIFETIME);
}

static inline void victim_ready(void) {
    fputs("ready\n", stdout);
    fflush(stdout);
}

/* Reads stdin lines until one is `go` (the tests' start signal); exits 2 if stdin ends first. */
static inline void victim_wait_for_go(const char *name) {
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL)
        if (strcmp(line, "go\n") == 0 || strcmp(line, "go") == 0) return;
    fprintf(stderr, "%s: stdin ended before `go`\n", name);
    exit(2);
}

/* Sleeps ms milliseconds, resuming after signals (a tracer's stops must not shorten the sleep). */
static inline void victim_sleep_ms(long ms) {
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
}
#endif
