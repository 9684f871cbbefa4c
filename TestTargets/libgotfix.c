/* Replacements for got_victim's imports (graft patch --got): each calls what the slot led to
 * through graft_original_<name>. logged_write prefixes the line with "[graft] "; fake_getppid
 * returns the real parent pid + 1000000. */
#include <graft.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

GRAFT_ORIGINAL(ssize_t, logged_write, (int fd, const void *buffer, size_t count));
ssize_t logged_write(int fd, const void *buffer, size_t count) {
    char line[256] = "[graft] ";
    size_t prefix = strlen(line);
    if (count > sizeof line - prefix) return graft_original_logged_write(fd, buffer, count);
    memcpy(line + prefix, buffer, count);
    ssize_t written = graft_original_logged_write(fd, line, prefix + count);
    return written < 0 ? written : (ssize_t)count;
}

GRAFT_ORIGINAL(pid_t, fake_getppid, (void));
pid_t fake_getppid(void) { return graft_original_fake_getppid() + 1000000; }
