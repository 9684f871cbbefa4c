/* typed_args: typed hook arguments from DWARF (built -g; typed_args_stripped is the same without
 * its DWARF, which sits in a separate debug file under a build-id path). After `go` it makes
 * argv[1] rounds (default 3) of these calls, then prints `done` and exits 0:
 *   int price(const char *item, int qty)                        price("apple", 3) = 30
 *   double scale(double x, float factor, int times)             scale(1.5, 0.25f, -2) = -0.75
 *   enum color paint(enum color c, unsigned char level)         paint(GREEN, 200) = BLUE
 *   long area(struct point p, struct box b, short s)            area({2,3}, {1,2,3,4}, -7) = 6
 *   void say(const char *text)                                  say("tab\there\n\"q\"\x01"), then a 100-char string
 *   char initial(char c)                                        initial('z') = 'Z'
 *   const char *name_of(enum color c)                           name_of(RED) = "red"
 * It also opens, reads and closes /etc/hosts (libc prototypes), mallocs and frees 100 bytes, and
 * calls gethostname(host, 1), which fails (-1, ENAMETOOLONG) after writing one byte of the name.
 * stdin: `go`. argv: [1] rounds, [2] lifetime s. */
#include "victim.h"
#include <fcntl.h>

#define USED __attribute__((noinline, used))

enum color { RED = 1, GREEN = 2, BLUE = 7 };
struct point { int x, y; };
struct box { long left, top, right, bottom; };

volatile int typed_zero = 0;

USED int price(const char *item, int qty) { return qty * 10 + typed_zero * (int)strlen(item); }
USED double scale(double x, float factor, int times) { return x * factor * times + typed_zero; }
USED enum color paint(enum color c, unsigned char level) { return level > 100 ? BLUE : c + typed_zero; }
USED long area(struct point p, struct box b, short s) { return p.x * p.y + typed_zero * (b.left + s); }
USED void say(const char *text) { if (typed_zero) puts(text); }
USED char initial(char c) { return (char)(c - 32 + typed_zero); }
USED const char *name_of(enum color c) { return c == RED ? "red" : c == GREEN ? "green" : "blue"; }

int main(int argc, char **argv) {
    long rounds = victim_arg(argc, argv, 1, 3);
    victim_begin((unsigned)victim_arg(argc, argv, 2, VICTIM_DEFAULT_LIFETIME));
    victim_ready();
    victim_wait_for_go("typed_args");
    char long_text[101];
    for (int i = 0; i < 100; i++) long_text[i] = (char)('a' + i % 26);
    long_text[100] = '\0';
    long sum = 0;
    for (long r = 0; r < rounds; r++) {
        sum += price("apple", 3);
        sum += (long)scale(1.5, 0.25f, -2);
        sum += paint(GREEN, 200);
        struct point p = { 2, 3 };
        struct box b = { 1, 2, 3, 4 };
        sum += area(p, b, -7);
        say("tab\there\n\"q\"\x01");
        say(long_text);
        sum += initial('z');
        sum += (long)strlen(name_of(RED));
        int fd = open("/etc/hosts", O_RDONLY | O_CLOEXEC);
        char buffer[16];
        if (fd >= 0) { sum += read(fd, buffer, sizeof buffer) > 0; close(fd); }
        char *block = malloc(100);
        sum += block != NULL;
        free(block);
        char host[8] = "unset";
        sum += gethostname(host, 1) == -1;
    }
    printf("done %ld\n", sum);
    fflush(stdout);
    return 0;
}
