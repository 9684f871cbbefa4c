/* libneeds.so: an ordinary shared library (DT_NEEDED libc.so.6): graft must refuse to map it into a
 * process itself, naming libc.so.6 (a library that needs others needs a dynamic loader). */
#include <stdio.h>

__attribute__((noinline, used)) int needs_puts(const char *text) { return puts(text); }
