// Placeholder: replaced by the program shown in docs/library.md.
import GraftKit
print(Graft().journal)
