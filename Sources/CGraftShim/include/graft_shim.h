#ifndef GRAFT_SHIM_H
#define GRAFT_SHIM_H
int graft_shim_placeholder(void);
#endif
