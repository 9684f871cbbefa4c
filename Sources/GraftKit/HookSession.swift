import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc
import Synchronization

/// A persistent-breakpoint session on one process: int3 at each hooked function, reported on every
/// call until the session ends, then every byte put back and checked.
///
/// The displaced instruction is never restored while the session runs (no remove/step/re-arm race,
/// so no call is missed): it is emulated on the registers or run from an out-of-line copy that jumps
/// back (see `X86DisplacedInstruction`). Return values come from a breakpoint at the return address,
/// matched to its call by thread and stack pointer. Every ptrace call runs on the session's tracer
/// thread; `requestStop` is the only method other threads call.
public final class HookSession: @unchecked Sendable {
    /// The target (for a launched command: known once `run` has started it).
    public private(set) var pid: Int32
    /// The command to start (launch mode), nil to attach to `pid`.
    public let command: [String]?
    /// Launch mode: how the command ended (graft reaps it), as a shell exit status.
    public private(set) var launchedExitStatus: Int32?
    public let specs: [HookSpec]
    public let limits: HookLimits
    private let journal: Journal
    private let stopState = StopState()
    /// False: calls are counted (the summary, `hitsSoFar`, `--count`) and `--returns` durations
    /// measured, but no `.hit`/`.returned` events are built or delivered, and no arguments or
    /// backtraces read: the cheapest hook (`graft hook --quiet`). Set before `run`.
    public var reportsCalls = true
    /// Hooks in the debug registers (DR0–DR3) instead of int3s: no byte of code changes; at most
    /// four (three with returns). Set before `run`.
    public var hardware = false
    /// `graft watch`: a data breakpoint on this variable (with or without hooks). Set before `run`.
    public var watch: WatchSpec?
    /// A hook whose module is not loaded yet waits for the process to load it (true, the default)
    /// or is an error (`--no-wait`). Set before `run`.
    public var waitsForLibraries = true
    /// `--filter`: only matching calls are reported and counted (`HookCallFilter`). Set before `run`.
    public var filter: HookFilter?
    /// Asked on the tracer thread after each `flush`: true while the caller still holds output back
    /// (a call line waiting for its return), so graft flushes again within ~10 ms even if the
    /// target makes no event. Set before `run`.
    public var holdsOutput: () -> Bool = { false }
    private let matchedHits = Atomic<Int>(0)
    /// Calls counted so far over all hooks (matching ones with a filter); readable from any thread
    /// while `run` runs.
    /// Called on the tracer thread with each process the target forks, once graft has released it
    /// (breakpoints out of its copy, detached): `HookFleet`'s `follow` hooks it. Set before `run`.
    public var onForkChild: (@Sendable (Int32) -> Void)?
    public var hitsSoFar: Int { filter == nil ? stopState.hits.load(ordering: .relaxed) : matchedHits.load(ordering: .relaxed) }
    /// The kernel thread id of the session's tracer thread while `run` runs (0 otherwise), for
    /// diagnostics: its scheduling policy and CPU are visible in /proc/self/task/TID/stat.
    public var tracerThreadID: Int32 { stopState.tracerThread.load(ordering: .relaxed) }

    /// - Parameter stopCheck: polled every 10 ms from a watcher thread; a non-nil answer ends the
    ///   session (the CLI passes the deferred SIGINT/SIGTERM/SIGHUP).
    public init(pid: Int32, specs: [HookSpec], limits: HookLimits = HookLimits(), journal: Journal = Journal()) {
        self.pid = pid
        self.command = nil
        self.specs = specs
        self.limits = limits
        self.journal = journal
    }

    /// Launch mode: `run` starts `command` (PATH searched) traced, arms the hooks at its entry point,
    /// before any of its own code runs, and reaps it at the end.
    public init(launching command: [String], specs: [HookSpec], limits: HookLimits = HookLimits(), journal: Journal = Journal()) throws {
        guard let first = command.first, !first.isEmpty else { throw GraftError.usage("no command to start after `--`") }
        self.pid = 0
        self.command = command
        self.specs = specs
        self.limits = limits
        self.journal = journal
    }

    /// Ends the session from any thread (idempotent); the breakpoints are removed before `run` returns.
    public func requestStop(_ reason: HookSessionEnd = .requested) {
        stopState.request(reason)
    }

    /// Attaches, arms every hook, reports calls through `onEvent` (on the tracer thread) until the
    /// session ends, then removes every breakpoint, verifies the code, and detaches.
    /// `flush` is called before graft blocks waiting for the target, so buffered output goes out.
    /// `onEnd` gets the summary once the breakpoints are out, before a launched command is waited for
    /// (it may run on long after the hooks ended).
    public func run(stopCheck: @escaping @Sendable () -> HookSessionEnd? = { nil },
                    flush: () -> Void = {}, onEvent: (HookEvent) -> Void,
                    onEnd: (HookSummary) -> Void = { _ in }) throws -> HookSummary {
        guard !specs.isEmpty || watch != nil else { throw GraftError.usage("give at least one LOCATION to hook") }
        // Parameter names a filter may use: known before the attach with -p (the types are looked up
        // then); a program graft starts has not loaded them yet: its names are taken as written.
        var names: Set<String> = []
        if command == nil {
            try ProcFS.preflightTarget(pid)
            names = HookEngine.prefetchSignatures(pid: pid, specs: specs, journal: journal, all: filter?.names.isEmpty == false)
        } else if let filter {
            names = Set(filter.names)
        }
        try filter?.check(for: specs, names: names)
        return try withSessionThreads(name: "graft-hooks", state: stopState, duration: limits.duration, check: stopCheck) { tracer, watcher in
            stopState.tracerThread.store(tracer.kernelThreadID, ordering: .relaxed)
            defer { stopState.tracerThread.store(0, ordering: .relaxed) }
            let tracee = try openTarget(command: command, pid: pid, tracer: tracer)
            pid = tracee.pid
            if command != nil, let filter { try checkLaunchedFilterNames(filter, tracee: tracee) }
            guard let filter else {
                let engine = try HookEngine.detachingOnFailure(tracee) {
                    try HookEngine(tracee: tracee, specs: specs, limits: limits, journal: journal, stopState: stopState)
                }
                engine.reportsCalls = reportsCalls
                configure(engine)
                return try runEngine(engine, launched: command != nil, status: &launchedExitStatus, ended: onEnd) {
                    try engine.run(flush: flush, onEvent: onEvent, watcher: watcher)
                }
            }
            // The engine reads the arguments the filter needs and reports every call; `--count`
            // counts matching calls, in the filter.
            var engineSpecs = specs
            if let highest = filter.highestArgument {
                for i in engineSpecs.indices { engineSpecs[i].argumentCount = max(engineSpecs[i].argumentCount, highest + 1) }
            }
            if !filter.names.isEmpty {  // parameter names: every typed argument is read
                for i in engineSpecs.indices { engineSpecs[i].argumentCount = HookFilter.maxArguments }
            }
            let calls = HookCallFilter(filter: filter, pid: tracee.pid, specs: specs, shownArguments: specs.map(\.argumentCount),
                                       reportsCalls: reportsCalls, countLimit: limits.count,
                                       onMatch: { [self] in matchedHits.add(1, ordering: .relaxed) },
                                       stop: { [stopState] in stopState.request(.count) })
            let engine = try HookEngine.detachingOnFailure(tracee) {
                try HookEngine(tracee: tracee, specs: engineSpecs, limits: HookLimits(duration: limits.duration), journal: journal,
                               stopState: stopState)
            }
            engine.reportsCalls = true
            configure(engine)
            let summary = try runEngine(engine, launched: command != nil, status: &launchedExitStatus, ended: { onEnd(calls.summary($0)) }) {
                try engine.run(flush: flush, onEvent: { calls.handle($0, onEvent: onEvent) }, watcher: watcher)
            }
            return calls.summary(summary)
        }
    }

    /// Launch mode: the command stands at its entry point, its libraries mapped, none of its own code
    /// run: the parameter names `--filter` reads are checked now as `-p` checks them before the
    /// attach. An unknown one ends the session with the one-line error naming the known ones; the
    /// command, which never ran, is killed and reaped (as when arming fails). Hooks in a library
    /// loaded later are learnt at their first hit (a notice there).
    private func checkLaunchedFilterNames(_ filter: HookFilter, tracee: Tracee) throws {
        guard !filter.names.isEmpty else { return }
        let (known, complete) = HookEngine.parameterNames(pid: tracee.pid, specs: specs, journal: journal, all: true)
        guard complete else { return }
        do {
            try filter.check(for: specs, names: known)
        } catch {
            kill(tracee.pid, SIGKILL)
            try? tracee.detach()
            launchedExitStatus = tracee.reapLaunched(forwarding: SIGKILL)
            throw error
        }
    }

    /// What the session's settings tell its engine before `run`.
    private func configure(_ engine: HookEngine) {
        if hardware || watch != nil { engine.debugSlots = DebugSlots() }
        engine.watchSpec = watch
        engine.waitsForLibraries = waitsForLibraries
        engine.onForkChild = onForkChild
        engine.holdsOutput = holdsOutput
    }
}

/// Runs `body` on a new tracer thread, with the watcher that ends the session on time, on a signal or
/// on request; both are gone when it returns. Every session (hook, trace) lives inside one.
func withSessionThreads<T>(name: String, state: StopState, duration: Double?, check: @escaping @Sendable () -> HookSessionEnd?,
                           _ body: (TracerThread, Watcher) throws -> T) throws -> T {
    let tracer = TracerThread(name: name)
    defer { tracer.shutdown() }
    let watcher = Watcher(state: state, tracer: tracer, duration: duration, check: check)
    defer { watcher.finish() }
    return try tracer.run { try body(tracer, watcher) }
}

/// Launch mode starts `command` traced (stopped before its own code runs); otherwise attach to `pid`.
func openTarget(command: [String]?, pid: Int32, tracer: TracerThread) throws -> Tracee {
    if let command { return try Tracee.launch(command, options: [.clone, .fork, .vfork, .exec], tracer: tracer) }
    return try Tracee.attach(pid: pid, tracer: tracer)
}

/// Runs a session's engine; in launch mode reaps the command afterwards and sets `status` to its
/// exit status (killing it if graft failed: a half-hooked program must not run on untraced).
func runEngine(_ engine: HookEngine, launched: Bool, status: inout Int32?, ended: (HookSummary) -> Void,
               _ body: () throws -> HookSummary) throws -> HookSummary {
    let summary: HookSummary
    do {
        summary = try body()
    } catch {
        if launched { status = engine.tracee.reapLaunched(forwarding: SIGKILL) }
        throw error
    }
    ended(summary)
    guard launched else { return summary }
    switch summary.end {
    case .targetExited(let exit):
        status = exit.shellStatus
    case .signal(SIGPIPE):
        // graft's stdout reader went away (`| head`): the command meets that on its own writes.
        status = engine.tracee.reapLaunched(forwarding: 0)
    case .signal(let signal) where (signal != SIGINT && signal != SIGQUIT) || !engine.session.signalsSeen.contains(signal):
        // SIGTERM/SIGHUP reached graft alone: pass them on. A terminal's Ctrl-C (Ctrl-\) goes to
        // the whole process group, and the command got its own SIGINT (SIGQUIT: graft saw it); a
        // `kill -INT` to graft alone did not reach the command: pass that on too.
        status = engine.tracee.reapLaunched(forwarding: signal)
    default:
        status = engine.tracee.reapLaunched(forwarding: 0)
    }
    return summary
}

/// The stop request, shared between the watcher, signal paths and the tracer thread.
final class StopState: @unchecked Sendable {
    private let reason = Mutex<HookSessionEnd?>(nil)
    /// Fast paths for the tracer thread, which asks on every event: plain atomics, the mutex only
    /// once a stop was requested.
    private let hasReason = Atomic<Bool>(false)
    private let pending = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)
    /// Calls counted so far over all hooks (the status line's "N hits so far", from any thread).
    let hits = Atomic<Int>(0)
    let tracerThread = Atomic<Int32>(0)

    func request(_ value: HookSessionEnd) {
        reason.withLock { if $0 == nil { $0 = value } }
        hasReason.store(true, ordering: .releasing)
    }

    var requested: HookSessionEnd? {
        guard hasReason.load(ordering: .acquiring) else { return nil }
        return reason.withLock { $0 }
    }

    /// The engine holds reported lines it has not flushed: the watcher wakes it to flush them.
    var outputPending: Bool {
        get { pending.load(ordering: .relaxed) }
        set { pending.store(newValue, ordering: .relaxed) }
    }

    func finish() { finished.store(true, ordering: .releasing) }

    var isDone: Bool { finished.load(ordering: .acquiring) }
}

/// A thread that ends the session on time, on a signal or on request: every 10 ms it checks, and
/// once a stop is requested it keeps waking the tracer thread until the session is over (a wake that
/// lands just before the tracer blocks in waitpid would be lost otherwise).
final class Watcher: @unchecked Sendable {
    private let state: StopState
    private let tracer: TracerThread
    private let duration: UInt64?
    /// 0 until `startDuration`; then when `--duration` ends the session.
    private let deadline = Atomic<UInt64>(0)
    private let check: @Sendable () -> HookSessionEnd?
    private var thread: pthread_t?

    init(state: StopState, tracer: TracerThread, duration: Double?, check: @escaping @Sendable () -> HookSessionEnd?) {
        self.state = state
        self.tracer = tracer
        self.duration = duration.map { UInt64(max(0, $0) * 1e9) }
        self.check = check
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        if pthread_create(&handle, nil, { raw in
            let me = Unmanaged<Watcher>.fromOpaque(raw!).takeRetainedValue()
            me.loop()
            return nil
        }, box.toOpaque()) == 0 {
            thread = handle
        } else {
            box.release()
        }
    }

    private func loop() {
        var ticks = 0
        var idleHistory = IdleHistory()
        while !state.isDone {
            if state.requested == nil {
                if let reason = check() {
                    state.request(reason)
                } else if case let end = deadline.load(ordering: .acquiring), end != 0, graft_monotonic_ns() >= end {
                    state.request(.duration)
                }
            }
            // The tracer may be SCHED_IDLE (CPUFollower: only while a CPU is spare). If the machine
            // filled up since, an idle-class tracer gets almost no CPU and cannot see it to change
            // back — a session then took minutes to end under load. The watcher, a normal thread,
            // puts it back when the machine was idle for less than a quarter of a CPU over the last
            // 100 ms (/proc/stat: /proc/loadavg's running count, used before, counted the watcher
            // itself and flipped the tracer out of SCHED_IDLE every few samples on an idle machine),
            // and at once when the session must end.
            ticks &+= 1
            let busy = ticks % 10 == 0 && (idleHistory.idleCPUs().map { $0 < 0.25 } ?? false)
            if state.requested != nil || busy, tracer.kernelThreadID != 0 {
                _ = graft_unidle_thread(tracer.kernelThreadID)
            }
            if state.requested != nil || state.outputPending { tracer.wake() }
            usleep(10_000)
        }
    }

    /// The hooks are armed: `--duration` starts now.
    func startDuration() {
        if let duration { deadline.store(graft_monotonic_ns() &+ max(duration, 1), ordering: .releasing) }
    }

    func finish() {
        state.finish()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }
}
