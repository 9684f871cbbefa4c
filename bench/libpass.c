/* libpass: the pass-through replacement of bench/inject.sh's per-call measurement.
 *   graft patch -p PID work --library libpass.so --to pass_work
 * pass_work() only calls the original work() through graft_original_pass_work (the trampoline graft
 * builds: work()'s relocated first instructions, then a jump back), so what a call costs beyond the
 * untouched work() is the redirection itself: jmp rel32 -> island `jmp [rip+0]` -> pass_work ->
 * call through the pointer -> trampoline -> jmp back into work(). Build: cc -O2 -shared -fPIC -I include. */
#include <graft.h>

GRAFT_ORIGINAL(int, pass_work, (int x));

int pass_work(int x) { return graft_original_pass_work(x); }
