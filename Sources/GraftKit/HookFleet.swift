import GraftCore
import GraftPtrace
import Glibc

/// Hook sessions on several processes at once (`graft hook -p 8153,8293`, `-n nginx`), each on its
/// own tracer thread, reported through one callback that says whose event it is; with `follow`,
/// every process they fork afterwards (a pre-fork server's new workers) gets a session too.
///
/// A followed child is released by its parent's session (breakpoints removed from its copy) and
/// then attached and armed by its own: the calls it makes in between (a few milliseconds) are not
/// reported. `--count` counts the calls of every process; `--duration` each session's.
public final class HookFleet: @unchecked Sendable {
    public let limits: HookLimits
    public let follow: Bool
    public var reportsCalls = true
    /// Applied to every session before it runs (the CLI's `--hardware`, `--no-wait`).
    public var configure: (@Sendable (HookSession) -> Void)?
    /// Asked (under the fleet's lock, like `flush`) after each session's flush: output still held
    /// back (`HookSession.holdsOutput`) keeps every session flushing.
    public var holdsOutput: (() -> Bool)?
    private let journal: Journal
    private let specsFor: @Sendable (Int32) throws -> [HookSpec]
    private let initial: [Int32]

    private let lock = ConditionLock()
    private var sessions: [Int32: HookSession] = [:]
    private var running = 0
    private var stopping: HookSessionEnd?
    private var reported = 0
    /// Calls past `--count`: not reported, nor are their returns.
    private struct DroppedCall: Hashable {
        let pid: Int32
        /// `HookHit.call`.
        let call: UInt64
    }
    private var dropped: Set<DroppedCall> = []
    /// How many calls past `--count` each process's hooks made (pid → hook → calls): taken out of
    /// its summary, which counts what was reported.
    private var droppedHits: [Int32: [Int: Int]] = [:]
    private var order: [Int32] = []
    private var results: [Int32: Result<HookSummary, GraftError>] = [:]
    private var threads: [pthread_t] = []

    /// `specs` resolves the hooks for each process (patterns match per process).
    public init(pids: [Int32], specs: @escaping @Sendable (Int32) throws -> [HookSpec], limits: HookLimits = HookLimits(),
                journal: Journal = Journal(), follow: Bool = false) {
        self.initial = pids
        self.specsFor = specs
        self.limits = limits
        self.journal = journal
        self.follow = follow
    }

    /// Calls reported so far over every process (any thread).
    public var hitsSoFar: Int { lock.withLock { sessions.values.reduce(0) { $0 + $1.hitsSoFar } } }

    /// Runs every session until each has ended (its target exited, the stop check, --count over
    /// all, --duration). `onEvent`, `flush` and `onEnd` are called with the process they concern,
    /// one at a time (never from two threads at once). Returns each process's summary or error, in
    /// the order the sessions started.
    public func run(stopCheck: @escaping @Sendable () -> HookSessionEnd? = { nil },
                    flush: @escaping (Int32) -> Void, onEvent: @escaping (Int32, HookEvent) -> Void,
                    onEnd: @escaping (Int32, HookSummary) -> Void) -> [(pid: Int32, result: Result<HookSummary, GraftError>)] {
        let callbacks = Callbacks(stopCheck: stopCheck, flush: flush, onEvent: onEvent, onEnd: onEnd)
        lock.withLock {
            for pid in initial { start(pid, callbacks) }
        }
        lock.lock()
        while running > 0 { lock.wait() }
        let started = threads
        threads = []
        lock.unlock()
        for thread in started { pthread_join(thread, nil) }
        return lock.withLock { order.compactMap { pid in results[pid].map { (pid, $0) } } }
    }

    private struct Callbacks: @unchecked Sendable {
        let stopCheck: @Sendable () -> HookSessionEnd?
        let flush: (Int32) -> Void
        let onEvent: (Int32, HookEvent) -> Void
        let onEnd: (Int32, HookSummary) -> Void
    }

    /// Starts `pid`'s session on a thread of its own. Called with `lock` held.
    private func start(_ pid: Int32, _ callbacks: Callbacks) {
        guard stopping == nil, sessions[pid] == nil else { return }
        let specs: [HookSpec]
        do {
            specs = try specsFor(pid)
        } catch {
            order.append(pid)
            results[pid] = .failure(error as? GraftError ?? GraftError.usage("\(error)"))
            return
        }
        var sessionLimits = limits
        sessionLimits.count = nil  // counted over every process, below
        let session = HookSession(pid: pid, specs: specs, limits: sessionLimits, journal: journal)
        session.reportsCalls = reportsCalls
        configure?(session)
        if let holds = holdsOutput {
            session.holdsOutput = { [self] in lock.withLock { holds() } }
        }
        if follow {
            session.onForkChild = { [weak self] child in
                guard let self else { return }
                self.lock.withLock {
                    callbacks.onEvent(pid, .notice("process \(pid) forked \(child): following it"))
                    self.start(child, callbacks)
                }
            }
        }
        sessions[pid] = session
        order.append(pid)
        running += 1
        let count = limits.count
        let body: () -> Void = { [self] in
            let result: Result<HookSummary, GraftError>
            do {
                let summary = try session.run(
                    stopCheck: { [self] in
                        if let end = callbacks.stopCheck() { return end }
                        return lock.withLock {
                            // --quiet: no hit events to count; the sessions' own counts, every 10 ms
                            // (a few calls past the count may be counted before they all stop).
                            if !reportsCalls, let count, stopping == nil,
                               sessions.values.reduce(0, { $0 + $1.hitsSoFar }) >= count {
                                stopping = .count
                            }
                            return stopping
                        }
                    },
                    flush: { [self] in lock.withLock { callbacks.flush(pid) } },
                    onEvent: { [self] event in
                        lock.withLock {
                            if case .hit(let hit) = event, let count {
                                if reported >= count {
                                    if hit.call != 0 { dropped.insert(DroppedCall(pid: pid, call: hit.call)) }
                                    droppedHits[pid, default: [:]][hit.hook, default: 0] += 1
                                    return
                                }
                                reported += 1
                                if reported >= count, stopping == nil { stopping = .count }
                            }
                            if case .returned(let value) = event, value.call != 0,
                               dropped.remove(DroppedCall(pid: pid, call: value.call)) != nil {
                                return  // the return of a call not reported
                            }
                            callbacks.onEvent(pid, event)
                        }
                    },
                    onEnd: { [self] summary in lock.withLock { callbacks.onEnd(pid, reportedOnly(summary, pid: pid)) } })
                result = .success(summary)
            } catch {
                result = .failure(error as? GraftError ?? GraftError.usage("\(error)"))
            }
            lock.withLock {
                results[pid] = result
                running -= 1
                lock.signal()
            }
        }
        if let thread = HookFleet.spawn(body) {
            threads.append(thread)
        } else {
            results[pid] = .failure(GraftError.usage("cannot start a thread for process \(pid)'s session: \(Errno.describe(errno))"))
            running -= 1
        }
    }

    /// A plain pthread running `body` (each session makes its own tracer thread inside).
    private static func spawn(_ body: @escaping () -> Void) -> pthread_t? {
        final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
        let box = Unmanaged.passRetained(Box(body))
        var handle = pthread_t()
        let created = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box.toOpaque())
        if created != 0 {
            box.release()
            return nil
        }
        return handle
    }

    /// `summary` without the calls past `--count` (not reported: `droppedHits`). Called with `lock` held.
    private func reportedOnly(_ summary: HookSummary, pid: Int32) -> HookSummary {
        guard let extra = droppedHits[pid], !extra.isEmpty else { return summary }
        var hooks = summary.hooks
        for (hook, calls) in extra where hook >= 0 && hook < hooks.count {
            hooks[hook].hits = max(0, hooks[hook].hits - calls)
        }
        var adjusted = HookSummary(hooks: hooks, end: summary.end, elapsedNanoseconds: summary.elapsedNanoseconds, codeRestored: summary.codeRestored)
        adjusted.filteredOut = summary.filteredOut
        return adjusted
    }
}
