/* Libraries the target's loader refuses (built twice by the Makefile):
 * - libmissingdep.so needs libgraft_gone.so, which the Makefile deletes after linking;
 * - libunresolved.so (-z now) calls graft_no_such_function, defined nowhere. */
#ifdef NEEDS_GONE
int graft_gone_function(int);
int broken(int x) { return graft_gone_function(x); }
#else
int graft_no_such_function(int);
int broken(int x) { return graft_no_such_function(x); }
#endif
