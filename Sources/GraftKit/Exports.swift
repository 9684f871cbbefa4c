// GraftKit is what a Swift program embeds: its public API speaks in the lower modules' types
// (GraftError, ResolvedLocation, Instruction, Tracee), so they come with it.
@_exported import GraftCore
@_exported import GraftELF
@_exported import GraftMachine
@_exported import GraftPtrace
import CLibunwind
