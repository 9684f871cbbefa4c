int graft_shim_placeholder(void) { return 0; }
