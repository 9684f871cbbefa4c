// Replacements for shapes' virtual methods (graft patch --vtable): each calls the original through
// graft_original_<name> (the slot's old value) and changes the result.
#include <graft.h>

namespace shapes { struct Circle; struct Labeled; }

GRAFT_ORIGINAL(double, fast_area, (const shapes::Circle *self));
extern "C" double fast_area(const shapes::Circle *self) { return graft_original_fast_area(self) * 10; }

GRAFT_ORIGINAL(const char *, loud_label, (const shapes::Labeled *self));
extern "C" const char *loud_label(const shapes::Labeled *self) { return graft_original_loud_label(self)[0] == 'l' ? "LABELED" : "?"; }
