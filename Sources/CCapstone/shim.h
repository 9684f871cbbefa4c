// Why this shim exists: capstone's per-architecture detail is a union inside cs_detail; small
// static inline accessors keep the Swift side free of union juggling.
#ifndef GRAFT_CCAPSTONE_SHIM_H
#define GRAFT_CCAPSTONE_SHIM_H
#include <capstone/capstone.h>
#endif
