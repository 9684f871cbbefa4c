import CGraftShim
import GraftCore
import GraftELF
import GraftPtrace
import Glibc

/// What `graft trace` does with a signal handler that interrupts the stepped thread.
public enum TraceSignalHandlers: String, Sendable, CaseIterable {
    /// Runtime signals (`TraceSignalHandlers.runtimeSignals`: Go's SIGURG preemption, SIGPROF
    /// sampling) run free; any other handler is stepped. The default.
    case auto
    /// Every handler is stepped, its instructions counted under the interrupted function.
    case step
    /// Every handler runs free: the thread is let go at full speed until it is back at the
    /// interrupted instruction with the interrupted stack pointer, then stepped on.
    case skip

    /// Signals whose handlers belong to a language runtime or a profiler rather than to the code being
    /// traced: SIGURG (Go's asynchronous preemption, every 10 ms of a running goroutine) and SIGPROF
    /// (setitimer/timer_create sampling profilers, Go's pprof).
    public static let runtimeSignals: Set<Int32> = [SIGURG, SIGPROF]

    /// Whether a handler run for `signal` is stepped.
    public func steps(_ signal: Int32) -> Bool {
        switch self {
        case .step: return true
        case .skip: return false
        case .auto: return !Self.runtimeSignals.contains(signal)
        }
    }
}

/// What `graft trace` steps, and when it stops.
public struct TraceOptions: Sendable {
    /// The thread to step from now on (default: the main thread). Ignored with `function`.
    public var tid: Int32?
    /// End after this many instructions.
    public var steps: UInt64?
    /// End after this many seconds.
    public var duration: Double?
    /// Wait until a thread enters this LOCATION, trace that call until it returns; `calls` times.
    public var function: String?
    public var calls: Int
    /// Below this depth (the traced function, or the thread's current function, is depth 1), calls
    /// run at full speed with a breakpoint on their return address instead of being stepped into.
    public var depth: Int?
    /// Disassemble every instruction (capstone), once per address.
    public var disassemble: Bool
    /// Report every instruction as a `.step` event (off for summary-only output: cheaper).
    public var reportSteps: Bool
    /// Keep the other threads stopped while a thread is stepped.
    public var allStop: Bool
    /// Signal handlers: stepped, or let run free (`--signals`).
    public var signals: TraceSignalHandlers

    public init(tid: Int32? = nil, steps: UInt64? = nil, duration: Double? = nil, function: String? = nil, calls: Int = 1,
                depth: Int? = nil, disassemble: Bool = false, reportSteps: Bool = true, allStop: Bool = false,
                signals: TraceSignalHandlers = .auto) {
        self.tid = tid
        self.steps = steps
        self.duration = duration
        self.function = function
        self.calls = calls
        self.depth = depth
        self.disassemble = disassemble
        self.reportSteps = reportSteps
        self.allStop = allStop
        self.signals = signals
    }
}

/// One executed instruction.
public struct TraceStep: Sendable {
    /// 1-based number of the instruction in the trace.
    public let index: UInt64
    public let tid: Int32
    public let pc: UInt64
    public let function: TraceFunction
    /// pc - the function's start (`TraceFunction.start`: the symbol's, else the `.eh_frame`
    /// function's; 0 when nothing is known).
    public let offset: UInt64
    /// The instruction's text (with `disassemble`).
    public let text: String?
    /// Frames on the shadow call stack when it ran.
    public let depth: Int

    /// `module!function+0xoff`; without a symbol `module+0xOFF` of the pc itself (both LOCATIONs).
    public var location: String {
        if function.name == nil, function.module != nil { return "\(function.module ?? "")+\(hex(pc &- function.moduleStart))" }
        return function.name == nil ? function.displayName : function.displayName + (offset == 0 ? "" : "+\(hex(offset))")
    }
}

/// A traced call began or ended (`--function`).
public struct TraceCall: Sendable {
    public let tid: Int32
    public let function: String
    public let began: Bool
    /// Instructions of this call (0 when it begins).
    public let instructions: UInt64
    /// Which traced call this is (1-based).
    public let number: Int
}

/// What a trace produced.
public struct TraceSummary: Sendable {
    /// Instructions executed and counted (a `rep` instruction counts once however many iterations).
    public let steps: UInt64
    /// ptrace stops of the stepped thread (rep iterations and signal stops included).
    public let singleSteps: UInt64
    /// Calls of `--function` traced to their end.
    public let callsTraced: Int
    public let elapsedNanoseconds: UInt64
    public let end: HookSessionEnd
    /// Breakpoints removed and the code verified equal to what it was before.
    public let codeRestored: Bool
    /// The call tree, per-function figures and folded stacks.
    public let profile: TraceProfile
    /// The stepped thread (default mode), or the last thread whose call was traced.
    public let tid: Int32?
    /// Signals delivered to the stepped thread while it was stepped.
    public let signalsDelivered: Int
    /// Signal handler runs let run free (`TraceSignalHandlers`), by signal number.
    public let handlersSkipped: [Int32: Int]
    /// All of them.
    public var handlerRunsSkipped: Int { handlersSkipped.values.reduce(0, +) }
}

/// A single-step trace of one thread of a live process: instruction by instruction, with a shadow
/// call stack, until a limit, a signal or the thread's end. Built on the hook engine: `--function`
/// is an int3 hook whose hit starts stepping, `--depth` steps over calls with return breakpoints, and
/// leaving removes every breakpoint, verifies the code and detaches with every thread running.
public final class TraceSession: @unchecked Sendable {
    public private(set) var pid: Int32
    public let command: [String]?
    public let options: TraceOptions
    public private(set) var launchedExitStatus: Int32?
    private let journal: Journal
    /// Launch mode without `function`: trace `main`, or from the entry point when there is none.
    private let defaultsToMain: Bool
    private let stopState = StopState()

    public init(pid: Int32, options: TraceOptions, journal: Journal = Journal()) {
        self.pid = pid
        self.command = nil
        self.options = options
        self.journal = journal
        self.defaultsToMain = false
    }

    /// Launch mode: starts `command` traced and stops it before its own code runs; without
    /// `options.function` the trace follows `main` from its entry to its return, or — in a program
    /// without a `main` symbol (stripped, Go's is `main.main`) — steps from the ELF entry point.
    public init(launching command: [String], options: TraceOptions, journal: Journal = Journal()) throws {
        guard let first = command.first, !first.isEmpty else { throw GraftError.usage("no command to start after `--`") }
        self.pid = 0
        self.command = command
        self.options = options
        self.journal = journal
        self.defaultsToMain = options.function == nil
    }

    /// Ends the trace from any thread (idempotent).
    public func requestStop(_ reason: HookSessionEnd = .requested) {
        stopState.request(reason)
    }

    /// `onEnd` gets the summary once the breakpoints are out and the process detached, before a
    /// launched command is waited for.
    public func run(stopCheck: @escaping @Sendable () -> HookSessionEnd? = { nil },
                    flush: () -> Void = {}, onEvent: (HookEvent) -> Void,
                    onEnd: (TraceSummary) -> Void = { _ in }) throws -> TraceSummary {
        if options.calls < 1 { throw GraftError.usage("--calls must be at least 1") }
        if let depth = options.depth, depth < 1 { throw GraftError.usage("--depth must be at least 1") }
        if command == nil {
            try ProcFS.preflightTarget(pid)
            if let tid = options.tid, options.function == nil, ProcFS.threadGroup(of: tid) != pid {
                throw GraftError.usage("thread \(tid) is not a thread of process \(pid) (see /proc/\(pid)/task)")
            }
        }
        return try withSessionThreads(name: "graft-trace", state: stopState, duration: options.duration, check: stopCheck) { tracer, watcher in
            let tracee = try openTarget(command: command, pid: pid, tracer: tracer)
            pid = tracee.pid
            var specs: [HookSpec] = []
            if let function = options.function {
                specs.append(HookSpec(location: function))
            } else if defaultsToMain, (try? SymbolIndex(pid: tracee.pid).resolve(Location.parse("main"))) != nil {
                specs.append(HookSpec(location: "main"))
            }
            let engine = try HookEngine.detachingOnFailure(tracee) {
                try HookEngine(tracee: tracee, specs: specs, limits: HookLimits(duration: options.duration),
                               journal: journal, stopState: stopState)
            }
            let stepper = Stepper(options: options, traceHook: specs.isEmpty ? nil : 0)
            engine.stepper = stepper
            func traceSummary(_ summary: HookSummary) -> TraceSummary {
                TraceSummary(steps: stepper.profile.instructions, singleSteps: stepper.singleSteps,
                             callsTraced: stepper.callsTraced, elapsedNanoseconds: stepper.elapsed,
                             end: summary.end, codeRestored: summary.codeRestored, profile: stepper.profile,
                             tid: stepper.lastTid, signalsDelivered: stepper.signalsDelivered,
                             handlersSkipped: stepper.handlersSkipped)
            }
            let summary = try runEngine(engine, launched: command != nil, status: &launchedExitStatus,
                                        ended: { onEnd(traceSummary($0)) }) {
                try engine.run(flush: flush, onEvent: onEvent, watcher: watcher)
            }
            return traceSummary(summary)
        }
    }
}
