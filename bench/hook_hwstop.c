/* hook_hwstop: the minimal C baseline for `graft hook --hardware` (bench/hooks.sh, issue 13).
 *
 *   hook_hwstop PID ADDR SECONDS [COUNTFILE]
 *
 * One stop per hit with the breakpoint in debug register DR0 of every thread (DR7 = L0, execute):
 * no byte of code changes; on a SIGTRAP with rip == ADDR it just PTRACE_CONTs (the kernel set RF, so
 * the instruction runs without trapping again). DR7 cleared on every thread at the end. Output as
 * bench/hook_onestop.c's, with "tool":"hwstop".
 *
 * Everything else (attach, clone events, teardown, output) is bench/hook_onestop.c's, built with HOOK_HW. */
#define HOOK_HW 1
#include "hook_onestop.c"
