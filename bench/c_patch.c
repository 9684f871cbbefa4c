/* c_patch: the minimal C baseline for graft's stop window (bench/run.sh).
 *
 *   c_patch PID ADDR HEXBYTES      e.g. c_patch 4242 0x55d0c0de1140 e91b000000
 *
 * Does only what a jump patch needs, the way graft does it, with no checks and no bookkeeping:
 * PTRACE_SEIZE (O_TRACECLONE) + PTRACE_INTERRUPT every thread in /proc/PID/task, waitpid(__WALL) for
 * each stop, re-reading the directory until a pass finds no new thread; PTRACE_PEEKTEXT/POKETEXT the
 * bytes (word read-modify-write); PTRACE_DETACH every thread (re-delivering a signal that arrived
 * meanwhile). Prints one line:
 *   {"stop_window_ns":N,"threads":T,"old":"<hex of the bytes it replaced>"}
 * stop_window_ns runs from the first PTRACE_INTERRUPT to the last PTRACE_DETACH (CLOCK_MONOTONIC).
 * Reverting is the same call with the old bytes. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>

#define MAX_THREADS 1024

static pid_t tids[MAX_THREADS];
static int pending_signal[MAX_THREADS];
static int gone[MAX_THREADS];
static int ntids = 0;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int known(pid_t tid) {
    for (int i = 0; i < ntids; i++)
        if (tids[i] == tid) return 1;
    return 0;
}

static void die(const char *what) {
    perror(what);
    for (int i = 0; i < ntids; i++)
        if (!gone[i]) ptrace(PTRACE_DETACH, tids[i], 0, (void *)(long)pending_signal[i]);
    exit(1);
}

/* Waits for the first stop of tids[i]; a clone event adds the new (auto-attached) thread. */
static void wait_stop(int i) {
    int status;
    if (waitpid(tids[i], &status, __WALL) < 0) die("waitpid");
    if (!WIFSTOPPED(status)) { /* exited meanwhile */
        gone[i] = 1;
        return;
    }
    int event = status >> 16;
    if (event == PTRACE_EVENT_CLONE) {
        unsigned long child;
        if (ptrace(PTRACE_GETEVENTMSG, tids[i], 0, &child) == 0 && !known((pid_t)child) && ntids < MAX_THREADS) {
            pending_signal[ntids] = 0;
            gone[ntids] = 0;
            tids[ntids++] = (pid_t)child;
            wait_stop(ntids - 1);
        }
    } else if (event == 0) {
        pending_signal[i] = WSTOPSIG(status); /* a signal-delivery stop: give it back at detach */
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: c_patch PID ADDR HEXBYTES\n");
        return 2;
    }
    pid_t pid = (pid_t)atoi(argv[1]);
    uint64_t addr = strtoull(argv[2], NULL, 0);
    const char *hex = argv[3];
    size_t len = strlen(hex) / 2;
    if (len == 0 || len > 64) { fprintf(stderr, "c_patch: 1 to 64 bytes\n"); return 2; }
    unsigned char bytes[64], old[64];
    for (size_t i = 0; i < len; i++) sscanf(hex + 2 * i, "%2hhx", &bytes[i]);

    char dirpath[64];
    snprintf(dirpath, sizeof dirpath, "/proc/%d/task", (int)pid);
    uint64_t start = 0;
    for (int pass = 0; pass < 100; pass++) {
        DIR *dir = opendir(dirpath);
        if (!dir) die("opendir");
        int first = ntids, found = 0;
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            pid_t tid = (pid_t)atoi(e->d_name);
            if (tid <= 0 || known(tid) || ntids >= MAX_THREADS) continue;
            if (ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)PTRACE_O_TRACECLONE) != 0) {
                if (errno == ESRCH) continue;
                die("PTRACE_SEIZE");
            }
            if (start == 0) start = now_ns();
            if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0 && errno != ESRCH) die("PTRACE_INTERRUPT");
            pending_signal[ntids] = 0;
            gone[ntids] = 0;
            tids[ntids++] = tid;
            found = 1;
        }
        closedir(dir);
        int last = ntids;
        for (int i = first; i < last; i++) wait_stop(i);
        if (!found) break;
    }

    pid_t tracee = 0;
    for (int i = 0; i < ntids && tracee == 0; i++)
        if (!gone[i]) tracee = tids[i];
    if (tracee == 0) { fprintf(stderr, "c_patch: the process exited\n"); return 1; }
    uint64_t first = addr & ~7ull, end = (addr + len + 7) & ~7ull;
    for (uint64_t word = first; word < end; word += 8) {
        errno = 0;
        long value = ptrace(PTRACE_PEEKTEXT, tracee, (void *)word, 0);
        if (errno != 0) die("PTRACE_PEEKTEXT");
        unsigned char *b = (unsigned char *)&value;
        for (int k = 0; k < 8; k++) {
            uint64_t at = word + k;
            if (at >= addr && at < addr + len) {
                old[at - addr] = b[k];
                b[k] = bytes[at - addr];
            }
        }
        if (ptrace(PTRACE_POKETEXT, tracee, (void *)word, (void *)value) != 0) die("PTRACE_POKETEXT");
    }

    for (int i = 0; i < ntids; i++)
        if (!gone[i]) ptrace(PTRACE_DETACH, tids[i], 0, (void *)(long)pending_signal[i]);
    uint64_t stop = now_ns();

    printf("{\"stop_window_ns\":%llu,\"threads\":%d,\"old\":\"", (unsigned long long)(stop - start), ntids);
    for (size_t i = 0; i < len; i++) printf("%02x", old[i]);
    printf("\"}\n");
    return 0;
}
