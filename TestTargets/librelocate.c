/* Replacements for relocate_heads' functions: each calls the original through its trampoline
 * (graft_original_r_<name>) and adds 1000, so the victim's line shows both that the replacement
 * ran and what the relocated original returned. */
#include <graft.h>

#define REPLACE(name)                                          \
    GRAFT_ORIGINAL(int, r_##name, (int));                      \
    int r_##name(int x) { return graft_original_r_##name(x) + 1000; }

REPLACE(h_rip_load)
REPLACE(h_rip_lea)
REPLACE(h_jcc)
REPLACE(h_jmp8)
REPLACE(h_jmp32)
REPLACE(h_call)
REPLACE(h_endbr)

/* A graft_original_ symbol that is not a writable pointer: refused. */
const int graft_original_r_const = 0;
int r_const(int x) { return x; }
