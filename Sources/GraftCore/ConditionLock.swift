import Glibc

/// A pthread mutex and condition variable at addresses that stay put.
///
/// `pthread_mutex_t` must not move once initialised, and a class's stored `var` passed with `&` is
/// not promised to be its storage (Swift may pass a temporary copy): so both live in memory this
/// class allocates. For a lock without a condition, use `Synchronization.Mutex`.
public final class ConditionLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        pthread_cond_destroy(condition)
        mutex.deallocate()
        condition.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }
    /// pthread_cond_wait: call with the lock held.
    public func wait() { pthread_cond_wait(condition, mutex) }
    /// pthread_cond_signal.
    public func signal() { pthread_cond_signal(condition) }

    public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
