import Dispatch
import Glibc
import GraftKit
import Testing
import TestSupport

/// A hook session running on a background thread, with every event it reported.
final class HookRun: @unchecked Sendable {
    let session: HookSession
    private let lock = NSLockLike()
    private var collected: [HookEvent] = []
    private var result: Result<HookSummary, any Error>?
    private let armedSignal = DispatchSemaphore(value: 0)
    private let doneSignal = DispatchSemaphore(value: 0)

    init(_ session: HookSession) {
        self.session = session
        DispatchQueue.global().async {
            let outcome = Result {
                try session.run(onEvent: { event in
                    self.lock.withLock { self.collected.append(event) }
                    if case .armed = event { self.armedSignal.signal() }
                })
            }
            self.lock.withLock { self.result = outcome }
            self.armedSignal.signal()  // a failure before arming must not leave waiters hanging
            self.doneSignal.signal()
        }
    }

    /// Waits until the breakpoints are in (or the session failed); true when armed.
    func waitArmed(timeout: Double = 20) -> Bool {
        guard armedSignal.wait(timeout: .now() + timeout) == .success else { return false }
        return lock.withLock { collected.contains { if case .armed = $0 { return true } else { return false } } }
    }

    /// Asks the session to end (if it has not) and returns its summary or error.
    @discardableResult
    func finish(timeout: Double = 30) throws -> HookSummary {
        session.requestStop()
        guard doneSignal.wait(timeout: .now() + timeout) == .success else {
            throw TestFailure("hook session did not end within \(timeout) s")
        }
        return try lock.withLock { result! }.get()
    }

    /// Waits for the session to end by itself.
    func waitEnd(timeout: Double = 30) throws -> HookSummary {
        guard doneSignal.wait(timeout: .now() + timeout) == .success else {
            session.requestStop()
            _ = doneSignal.wait(timeout: .now() + 10)
            throw TestFailure("hook session did not end by itself within \(timeout) s")
        }
        return try lock.withLock { result! }.get()
    }

    var events: [HookEvent] { lock.withLock { collected } }
    var hits: [HookHit] { events.compactMap { if case .hit(let hit) = $0 { return hit } else { return nil } } }
    var returns: [HookReturn] { events.compactMap { if case .returned(let value) = $0 { return value } else { return nil } } }
    var armedHooks: [ArmedHook] { events.flatMap { if case .armed(let hooks) = $0 { return hooks } else { return [] } } }
    var notices: [String] { events.compactMap { if case .notice(let text) = $0 { return text } else { return nil } } }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A pthread mutex with a closure API (Foundation-free).
final class NSLockLike: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}

/// Every hooked function's bytes in memory equal its file bytes (no int3 left).
func expectCodeRestored(_ victim: Victim, _ functions: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    for function in functions {
        do {
            let bytes = try functionBytes(pid: victim.pid, function)
            #expect(bytes.memory == bytes.file, "\(function): memory differs from the file", sourceLocation: sourceLocation)
        } catch {
            Issue.record("reading \(function): \(error)", sourceLocation: sourceLocation)
        }
    }
}

/// The integers in a line like `calls 1000 sum 5000`.
func parseInts(_ line: String) -> [Int] {
    line.split(separator: " ").compactMap { Int($0) }
}
