import GraftELF
import GraftMachine
import GraftPtrace

/// What the parts of a running hook or trace session share and change: the event loop, the hit
/// path, teardown and the stepper each read and write it, and nothing else of one another.
///
/// A final class, held by the engine and handed to the stepper through `StepperHost`: its fields are
/// changed in place (a struct behind a protocol property would be copied, or changed through a
/// `modify` coroutine, whose frame is a malloc).
final class SessionState {
    /// Why the session ends; nil while it runs.
    var end: HookSessionEnd?
    /// Threads the loop leaves in their stop (the thread that exec'd, threads the stepper holds):
    /// teardown must not wait for them.
    var parked: Set<Int32> = []
    /// Clone/fork children whose first stop came before their parent's event.
    var earlyStops: Set<Int32> = []
    /// Signals the target received while traced (launch mode: was a Ctrl-C also the target's?).
    var signalsSeen: Set<Int32> = []
}

/// What the stepper needs of the session it runs in, and no more: the tracee, the breakpoint table,
/// the shared state, symbols and decoding, backtraces, return sites, the CPU follower.
///
/// `Stepper`'s methods are generic over it (`some StepperHost`), not over an existential: within
/// GraftKit the optimizer specializes them for `HookEngine`, so a step pays no witness-table call.
protocol StepperHost: AnyObject {
    var tracee: Tracee { get }
    var breakpoints: BreakpointTable { get }
    var session: SessionState { get }
    var index: SymbolIndex { get }
    var disassembler: Disassembler { get }
    /// Frames of a stopped thread, innermost first (libunwind, named through the symbol index).
    func backtrace(of tid: Int32) -> [BacktraceFrame]
    /// Makes sure a return breakpoint sits at `address` (`HookEngine.ensureReturnSite`).
    func ensureReturnSite(_ address: UInt64, via tid: Int32, onEvent: (HookEvent) -> Void) throws -> Bool
    /// Lets the CPU follower see that `tid` stopped (see `CPUFollower`).
    func followCPU(of tid: Int32)
}

extension HookEngine: StepperHost {
    func backtrace(of tid: Int32) -> [BacktraceFrame] { unwinder.backtrace(of: tid) }
    func followCPU(of tid: Int32) { cpuFollower.observe(process: tracee.pid, thread: tid) }
}
