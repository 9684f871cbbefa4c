/* libc_pid: a dynamically linked program whose libc is the cross toolchain's real one (Debian's
 * libc6-armhf-cross / libc6-arm64-cross), for patching a shared library nobody here wrote on file:
 * tests patch a copy of that libc's getpid (`--to getppid`, `--return N`; ET_DYN, so the jump is a
 * relative branch), run this under qemu-user with the copy first on LD_LIBRARY_PATH, and read
 * `pid N ppid M same|different`. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    int pid = (int)getpid(), ppid = (int)getppid();
    printf("pid %d ppid %d %s\n", pid, ppid, pid == ppid ? "same" : "different");
    return 0;
}
