// elfutils' libdw (libdw-dev): DWARF of graft's targets, for typed hook arguments
// (GraftELF/DWARF*.swift). Only the headers: every function used is a plain C function.
#ifndef GRAFT_CLIBDW_SHIM_H
#define GRAFT_CLIBDW_SHIM_H
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <libelf.h>
#include <dwarf.h>
#include <fcntl.h>
#include <unistd.h>
#endif
