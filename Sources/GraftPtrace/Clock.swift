import CGraftShim

/// CLOCK_MONOTONIC in nanoseconds: the one clock graft measures with (stop windows, hook durations,
/// session time, status lines). `graft_monotonic_ns` in C, so a hit path can read it without Swift
/// work; this is its name for Swift code outside GraftPtrace (the CLI).
@inline(__always)
public func monotonicNanoseconds() -> UInt64 { graft_monotonic_ns() }
