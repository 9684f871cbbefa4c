import Dispatch
import Glibc
import GraftKit
import Testing
import TestSupport

/// What `SessionRun` needs of a hook or trace session.
protocol BackgroundSession: AnyObject, Sendable {
    associatedtype Summary
    func runCollecting(_ onEvent: (HookEvent) -> Void) throws -> Summary
    func requestStop(_ reason: HookSessionEnd)
}

extension HookSession: BackgroundSession {
    func runCollecting(_ onEvent: (HookEvent) -> Void) throws -> HookSummary { try run(onEvent: onEvent) }
}

extension TraceSession: BackgroundSession {
    func runCollecting(_ onEvent: (HookEvent) -> Void) throws -> TraceSummary { try run(onEvent: onEvent) }
}

/// A hook or trace session running on a background thread, with every event it reported.
final class SessionRun<Session: BackgroundSession>: @unchecked Sendable {
    let session: Session
    private let lock = NSLockLike()
    private var collected: [HookEvent] = []
    private var result: Result<Session.Summary, any Error>?
    private var started = false
    private let startSignal = DispatchSemaphore(value: 0)
    private let doneSignal = DispatchSemaphore(value: 0)

    /// `isStart` picks the event that says the session is under way (hooks: armed; trace: armed or
    /// the first step).
    init(_ session: Session, startsWith isStart: @escaping @Sendable (HookEvent) -> Bool) {
        self.session = session
        DispatchQueue.global().async {
            let outcome = Result {
                try session.runCollecting({ event in
                    let first = self.lock.withLock {
                        self.collected.append(event)
                        guard !self.started, isStart(event) else { return false }
                        self.started = true
                        return true
                    }
                    if first { self.startSignal.signal() }
                })
            }
            self.lock.withLock { self.result = outcome }
            self.startSignal.signal()  // a failure before the start must not leave waiters hanging
            self.doneSignal.signal()
        }
    }

    /// Waits until the session is under way (or has failed); true when it started.
    func waitStarted(timeout: Double = 20) -> Bool {
        guard startSignal.wait(timeout: .now() + timeout) == .success else { return false }
        return lock.withLock { started }
    }

    /// Asks the session to end (if it has not) and returns its summary or error.
    @discardableResult
    func finish(timeout: Double = 30) throws -> Session.Summary {
        session.requestStop(.requested)
        return try waitEnd(timeout: timeout)
    }

    /// Waits for the session to end by itself.
    func waitEnd(timeout: Double = 30) throws -> Session.Summary {
        guard doneSignal.wait(timeout: .now() + timeout) == .success else {
            session.requestStop(.requested)
            _ = doneSignal.wait(timeout: .now() + 10)
            throw TestFailure("session did not end within \(timeout) s")
        }
        return try lock.withLock { result! }.get()
    }

    var events: [HookEvent] { lock.withLock { collected } }
    var notices: [String] { events.compactMap { if case .notice(let text) = $0 { return text } else { return nil } } }
}

typealias HookRun = SessionRun<HookSession>

extension SessionRun where Session == HookSession {
    convenience init(_ session: HookSession) {
        self.init(session, startsWith: { if case .armed = $0 { return true } else { return false } })
    }

    /// Waits until the breakpoints are in (or the session failed); true when armed.
    func waitArmed(timeout: Double = 20) -> Bool { waitStarted(timeout: timeout) }

    var hits: [HookHit] { events.compactMap { if case .hit(let hit) = $0 { return hit } else { return nil } } }
    var returns: [HookReturn] { events.compactMap { if case .returned(let value) = $0 { return value } else { return nil } } }
    var armedHooks: [ArmedHook] { events.flatMap { if case .armed(let hooks) = $0 { return hooks } else { return [] } } }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A mutex with a closure API (Foundation-free).
final class NSLockLike: Sendable {
    private let lock = ConditionLock()
    func withLock<T>(_ body: () throws -> T) rethrows -> T { try lock.withLock(body) }
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
