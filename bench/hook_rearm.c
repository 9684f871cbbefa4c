/* hook_rearm: the classic persistent breakpoint, as a minimal C ptrace tool (bench/hooks.sh).
 *
 *   hook_rearm PID ADDR SECONDS [COUNTFILE]
 *
 * On each hit (SIGTRAP with rip == ADDR+1): POKETEXT the original byte back, rewind rip to ADDR,
 * PTRACE_SINGLESTEP the real instruction, waitpid for the step, POKETEXT the int3 again, PTRACE_CONT:
 * two stops per hit, and while the byte is original every OTHER thread of the target runs through
 * the function without trapping. With COUNTFILE (bench/hook_victim.c's call counters) the final JSON
 * line says how many calls it missed that way:
 *   {"tool":"rearm","hits":H,"calls":C,"missed":C-H,"threads":T,"armed_ns":N,"foreign_traps":F,"drained_traps":Q}
 *
 * Everything else (attach, clone events, teardown, output) is bench/hook_onestop.c's, built with
 * HOOK_REARM so that the two tools differ only in what they do per hit. */
#define HOOK_REARM 1
#include "hook_onestop.c"
