/* libdup.so: a shared library that defines `value_a` (returning 9) again, for the ambiguity tests:
 * preloaded into c_loop (LD_PRELOAD), the name is in two modules. c_loop keeps calling its own
 * value_a (a PIE executable's calls to its own functions are not interposed). */
__attribute__((noinline, used)) int value_a(void) { return 9; }
__attribute__((noinline, used)) int dup_only(void) { return 10; }
