import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// The session's work on the tracer thread: its state and its event loop (this file). The rest of
/// the engine lives in extensions named for their concern: `HookArming.swift` (plan and write the
/// int3s, return sites), `HookHit.swift` (a stop at a breakpoint), `HookTeardown.swift` (stop, restore,
/// detach; fork children). Its parts: `BreakpointTable`, `ScratchPages` (+ `NearPageAllocator`),
/// `CPUFollower`, `SessionState`; the stepper sees it only as a `StepperHost`.
final class HookEngine {
    let tracee: Tracee
    /// The hooks armed (pattern-expanded ones that could not take a hook are dropped by `arm`).
    var specs: [HookSpec]
    /// Pattern-expanded functions `arm` skipped, with why (reported as a notice once armed).
    var skipped: [String] = []
    /// Said once armed: what `arm` chose that the LOCATION did not name (an IFUNC's implementation, a
    /// watched variable's first 8 bytes), hooks waiting for their library.
    var armNotices: [String] = []
    let limits: HookLimits
    let journal: Journal
    let stopState: StopState
    /// Rebuilt when the loader maps a library a waiting hook needs (`loaderStateChanged`).
    var index: SymbolIndex
    let disassembler: Disassembler
    lazy var unwinder = RemoteUnwinder(index: index)

    let breakpoints = BreakpointTable()
    /// Calls whose return graft waits for, by owner (`returnOwner`): the thread, or for Go code the
    /// goroutine, which may return on another thread than the one it was called on.
    var pending: [UInt64: [PendingReturn]] = [:]
    /// The number of the last call reported (`HookHit.call`).
    var callSerial: UInt64 = 0
    /// `HookSession.holdsOutput`: after a flush, output still held back keeps graft flushing.
    var holdsOutput: () -> Bool = { false }
    let scratch: ScratchPages
    var stats: [HookStatistics] = []
    var armed: [ArmedHook] = []
    var totalHits = 0
    var vforkChildren: Set<Int32> = []
    /// What the loop, the hit path, teardown and the stepper share as the session runs.
    let session = SessionState()
    /// Trace mode: the single-stepping half (see Stepper).
    var stepper: Stepper?
    /// `--count` reached, waiting for the counted calls' returns (see `drainLimit`).
    var draining = false
    var drainDeadline: UInt64 = 0
    static let drainLimit: UInt64 = 2_000_000_000
    var execHappened = false
    var refusedReturnSites: Set<UInt64> = []
    var random = SystemRandomNumberGenerator()
    /// When the hooks were armed: the summary's seconds (and calls/s) count from here.
    var started = graft_monotonic_ns()
    var cpuFollower = CPUFollower()
    /// GRAFT_DEBUG_EVENTS=1: every event on stderr (a global would cost a swift_once per event).
    let debugEventsOn = debugEvents
    /// False: calls are counted (summary, `StopState.hits`) but no `.hit`/`.returned` events are
    /// built or delivered — `graft hook --quiet`, the cheapest hook.
    var reportsCalls = true
    /// `--hardware` and `graft watch`: the hooks (and the watch) live in the debug registers, no
    /// int3 is written (see `DebugSlots`, HardwareHooks.swift). Set before `run`.
    var debugSlots: DebugSlots?
    /// `graft watch`: the variable, planned by `arm`.
    var watchSpec: WatchSpec?
    /// Hooks in a module the process has not loaded yet (by hook index, with the module's name as
    /// given), armed when the loader maps it; `loaderBreakpoint` is where graft hears of it.
    var waitingHooks: [(hook: Int, module: String)] = []
    var loaderBreakpoint: Breakpoint?
    /// False (`--no-wait`): a module not loaded yet is an error, as it was.
    var waitsForLibraries = true
    /// Per hook, once looked up at its first reported hit: how its arguments and result are typed
    /// (`.some(nil)`: raw registers). `HookSignatures.swift`.
    var decoders: [Int: ArgumentDecoder?] = [:]
    /// Called with each fork child once it is released (its breakpoints removed, detached):
    /// `hook --follow` hooks it in a session of its own.
    var onForkChild: ((Int32) -> Void)?

    init(tracee: Tracee, specs: [HookSpec], limits: HookLimits, journal: Journal, stopState: StopState) throws {
        self.tracee = tracee
        self.specs = specs
        self.limits = limits
        self.journal = journal
        self.stopState = stopState
        // Built while every thread is stopped, before arming: the maps cannot change under us.
        self.index = (try? Graft.symbolIndex(pid: tracee.pid, journal: journal)) ?? SymbolIndex(mappings: [])
        self.disassembler = try Disassembler(.x86_64)
        self.scratch = ScratchPages(allocator: NearPageAllocator(tracee: tracee, index: index))
    }

    /// Builds an engine for an attached `tracee`; if that fails (capstone cannot open), the tracee
    /// is let go before the error is thrown.
    static func detachingOnFailure(_ tracee: Tracee, _ make: () throws -> HookEngine) throws -> HookEngine {
        do {
            return try make()
        } catch {
            try? tracee.detach()
            throw error
        }
    }

    // MARK: - Run

    func run(flush: () -> Void, onEvent: (HookEvent) -> Void, watcher: Watcher) throws -> HookSummary {
        do {
            try tracee.setOptions([.clone, .fork, .vfork, .exec])
            try arm()
        } catch {
            breakpoints.restoreAll(in: tracee)
            // No thread has run since the attach: nothing can be inside a scratch page yet.
            scratch.unmapAll()
            try? tracee.detach()
            throw error
        }
        pcOnlyHooks = specs.map { spec in
            !spec.catchesReturn && !spec.skip && (!reportsCalls || (spec.argumentCount == 0 && !spec.backtrace))
        }
        pcOnlyPath = stepper == nil && pcOnlyHooks.contains(true)
        // --duration and the summary's seconds count from the arming, not from graft's start:
        // attaching and reading symbols are not hooking time.
        started = graft_monotonic_ns()
        watcher.startDuration()
        onEvent(.armed(armed))
        for notice in armNotices { onEvent(.notice(notice)) }
        if !skipped.isEmpty {
            onEvent(.notice("skipped \(skipped.count) function\(skipped.count == 1 ? "" : "s") the pattern matched that cannot take a hook: \(skipped.prefix(20).joined(separator: "; "))\(skipped.count > 20 ? "; …" : "")"))
        }
        flush()  // a script waiting for the armed line must not wait for the first hit
        var loopError: Error?
        do {
            if let stepper, stepper.traceHook == nil {
                // Default trace mode: the stepped thread (and with --all-stop every other) stays ours.
                let keep = try stepper.startDefault(self)
                if let stepped = stepper.tid { session.parked.formUnion(keep.subtracting([stepped])) }
                try tracee.resumeAll(except: keep)
            } else {
                try tracee.resumeAll()
            }
            try loop(flush: flush, onEvent: onEvent)
        } catch {
            loopError = error
        }
        stopState.outputPending = false  // the watcher must not keep waking this thread now
        // Every exit path: stop everything, put the code back, detach.
        let restored = teardown(onEvent: onEvent)
        flush()
        // An exec from another thread kills every thread but the one exec'ing: a ptrace call on one
        // of them fails (ESRCH) before the exec event is collected; the teardown collects it.
        if loopError != nil, session.end == nil, execHappened { session.end = .targetExec }
        if let loopError, session.end == nil { throw loopError }
        return HookSummary(hooks: stats, end: session.end ?? .requested, elapsedNanoseconds: graft_monotonic_ns() - started,
                           codeRestored: restored)
    }

    func loop(flush: () -> Void, onEvent: (HookEvent) -> Void) throws {
        var unflushed = false
        var lastFlush = graft_monotonic_ns()
        while session.end == nil {
            if let reason = stopState.requested {
                session.end = reason
                break
            }
            // Flushing before every wait would cost a waitpid(WNOHANG) and a write per hit (or per
            // instruction when stepping). Lines are flushed at most every 5 ms (50 ms while
            // stepping; at once before a step that may block in a system call); in between, the
            // watcher's 10 ms tick wakes this thread so lines never wait for the next event.
            var mayFlush = unflushed
            if unflushed && !reportsCalls {
                // Only the status line's count is waiting: the watcher's next tick (≤ 10 ms) wakes
                // this thread to flush it. No clock read per hit.
                mayFlush = false
                stopState.outputPending = true
            } else if unflushed {
                let stepping = stepper?.isStepping ?? false
                let interval: UInt64 = stepping ? 50_000_000 : 5_000_000
                mayFlush = graft_monotonic_ns() &- lastFlush >= interval || (stepping && stepper?.lastWasSyscall == true)
                if !mayFlush { stopState.outputPending = true }
            }
            if draining {
                if graft_monotonic_ns() >= drainDeadline {
                    let waiting = pending.values.reduce(0) { $0 + $1.count }
                    if waiting > 0 { onEvent(.notice("--count reached; \(waiting) counted call\(waiting == 1 ? " is" : "s are") still running: \(waiting == 1 ? "its return is" : "their returns are") not reported")) }
                    session.end = .count
                    break
                }
                mayFlush = false
            }
            var event = try tracee.waitForEvent(block: !mayFlush && !draining)
            if event == nil && draining {
                if unflushed { flush(); unflushed = holdsOutput() }
                usleep(1_000)
                continue
            }
            if event == nil && unflushed {  // nothing ready, or woken by the watcher
                stopState.outputPending = false  // before writing: no wake signal may interrupt a write
                flush()
                unflushed = holdsOutput()
                lastFlush = graft_monotonic_ns()
                continue
            }
            guard let next = event else { continue }  // woken: check the stop request
            event = nil
            if debugEventsOn { writeDebug("event \(next)\n") }
            if try handle(next, onEvent: onEvent) { unflushed = true }
        }
    }

    /// Handles one event while the session runs; true when something was reported.
    func handle(_ event: TraceEvent, onEvent: (HookEvent) -> Void) throws -> Bool {
        if let stepper, let reported = try stepper.intercept(event, host: self, onEvent: onEvent) { return reported }
        if debugSlots != nil, let reported = try handleHardware(event, onEvent: onEvent) { return reported }
        switch event {
        case .trap(let tid):
            if pcOnlyPath, let reported = try pcOnlyHit(tid, onEvent: onEvent) { return reported }
            var registers = try tracee.registers(of: tid)
            let address = registers.rip &- 1
            guard let breakpoint = breakpoints[address], !breakpoint.pcIsAmbiguous || trapIsOurs(tid) else {
                // Not graft's: the target's own int3 or raise(SIGTRAP). Deliver it.
                try tracee.resume(tid, signal: SIGTRAP)
                return false
            }
            registers.rip = address
            if breakpoint === loaderBreakpoint { loaderStateChanged(tid, onEvent: onEvent) }
            if let stepper, vforkChildren.isEmpty || !vforkChildren.contains(tid), stepper.wantsToTrace(breakpoint) {
                try stepper.begin(tid, registers: &registers, breakpoint: breakpoint, host: self, onEvent: onEvent)
                return true
            }
            cpuFollower.observe(process: tracee.pid, thread: tid)
            let before = registers
            let reported = try hit(breakpoint, tid: tid, registers: &registers, onEvent: onEvent)
            if registers.differsOnlyInPC(from: before) {
                try tracee.setProgramCounter(registers.rip, of: tid)  // ~0.55 µs, SETREGS ~1.6 µs
            } else {
                try tracee.setRegisters(registers, of: tid)
            }
            try tracee.resume(tid)
            checkCount()
            return reported
        case .signal(let tid, let signal):
            session.signalsSeen.insert(signal)
            if signal == SIGCONT { tracee.clearGroupStop(tid) }
            try tracee.resume(tid, signal: signal)
        case .groupStop(let tid, _):
            try tracee.listen(tid)
        case .interrupted(let tid):
            tracee.clearGroupStop(tid)
            try tracee.resume(tid)
        case .earlyStop(let tid):
            session.earlyStops.insert(tid)
        case .newThread(let parent, let child):
            giveOriginalAffinity(to: child)
            if session.earlyStops.remove(child) != nil { try tracee.resume(child) }
            try continueThread(parent)
        case .forked(let parent, let child, let isVfork):
            if isVfork {
                giveOriginalAffinity(to: child)  // a fork child gets it in releaseForkChild
                if session.earlyStops.remove(child) != nil { try tracee.resume(child) }
                // The child shares the memory (and the breakpoints) until it execs or exits: keep
                // serving its hits like any thread's.
                vforkChildren.insert(child)
                tracee.track(child)
                try continueThread(parent)
                onEvent(.notice("vfork child \(child) shares the hooked memory until it execs"))
                return true
            }
            releaseForkChild(child)
            try continueThread(parent)
            if let onForkChild {
                onForkChild(child)
            } else {
                onEvent(.notice("fork child \(child) released without breakpoints"))
            }
            return true
        case .exec(let tid):
            if vforkChildren.contains(tid) {
                vforkChildren.remove(tid)
                tracee.detachThread(tid)
                return false
            }
            // The process image is gone, and the breakpoints with it.
            session.parked.insert(tid)
            execHappened = true
            breakpoints.removeAll()
            pending.removeAll()
            scratch.forget()
            session.end = .targetExec
            onEvent(.notice("process \(tracee.pid) called exec: its code is new, the hooks are gone"))
            return true
        case .threadExited(let tid, let status):
            pending[HookEngine.threadOwner(tid)] = nil  // a goroutine's calls outlive the thread
            unwinder.forget(tid)
            if draining, session.end == nil, pending.values.allSatisfy(\.isEmpty) { session.end = .count }
            if vforkChildren.remove(tid) != nil { return false }
            if tid == tracee.pid {
                session.end = .targetExited(status)
            }
        case .other(let tid, _):
            try tracee.resume(tid)
        }
        return false
    }


    /// One call of `hook`: the summary's, `--count`'s and the status line's counters.
    func count(_ hook: Int) {
        totalHits += 1
        stats[hook].hits += 1
        stopState.hits.add(1, ordering: .relaxed)
    }

    /// `--count` reached: let the counted calls return (and report their returns) before ending; new
    /// calls are no longer counted. At most `drainLimit`.
    func checkCount() {
        if let count = limits.count, totalHits >= count, session.end == nil, !draining {
            if pending.values.allSatisfy(\.isEmpty) { session.end = .count } else {
                draining = true
                drainDeadline = graft_monotonic_ns() &+ Self.drainLimit
            }
        } else if draining, pending.values.allSatisfy(\.isEmpty) {
            session.end = .count
        }
    }

    /// Some hook needs only the pc at a hit and no thread is stepped: such a hit is PTRACE_PEEKUSER
    /// rip, PTRACE_POKEUSER rip to where the thread goes on, PTRACE_CONT (~1.1 µs of ptrace,
    /// against ~4.2 µs for GETREGS + POKEDATA + SETREGS). Decided once the hooks are armed.
    var pcOnlyPath = false
    /// By hook: a hit needs the pc and nothing else — no return caught, no --skip, and either no
    /// events (--quiet) or an event without arguments or backtrace (the default text line and
    /// JSON `hit` of `graft hook -p PID f` carry only the thread, the address and the time).
    var pcOnlyHooks: [Bool] = []

    /// Lets a thread go on after an event stop: the stepped thread by another single step.
    func continueThread(_ tid: Int32, signal: Int32 = 0) throws {
        if let stepper, stepper.tid == tid, stepper.isStepping {
            try stepper.stepOn(self, signal: signal)
        } else {
            try tracee.resume(tid, signal: signal)
        }
    }
}
