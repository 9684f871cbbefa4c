import GraftCore

/// A value behind a lock. GraftELF's classes are `@unchecked Sendable` because their lazy caches live
/// behind one of these. (`Synchronization.Mutex` would want the value and every result `sending`,
/// which the caches' non-Sendable values are not.)
final class Locked<Value>: @unchecked Sendable {
    private let lock = ConditionLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// The last path component: `/usr/lib/x86_64-linux-gnu/libc.so.6` -> `libc.so.6`.
func basename(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return path }
    return String(path[path.index(after: slash)...])
}
