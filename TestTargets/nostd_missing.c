/* libnostd_missing.so: self-contained (-nostdlib) but for one strong reference to a symbol no
 * target defines: graft must refuse to map it, naming graft_no_such_symbol. */
extern int graft_no_such_symbol;

__attribute__((noinline, used)) int missing_value(void) { return graft_no_such_symbol; }
