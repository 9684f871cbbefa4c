import Glibc

/// GRAFT_DEBUG_EVENTS=1: every event of a session on stderr.
let debugEvents = getenv("GRAFT_DEBUG_EVENTS") != nil
func writeDebug(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress!, $0.count) }
}

/// CLOCK_REALTIME nanoseconds, for the wall time of hook events (durations use graft_monotonic_ns).
func wallClock() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
