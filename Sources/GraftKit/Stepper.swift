import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc


/// si_code values of a SIGTRAP stop (asm-generic/siginfo.h, include/linux/ptrace.h).
enum TrapCode {
    static let brkpt: Int32 = 1       // TRAP_BRKPT: x86 reports a stepped syscall this way
    static let trace: Int32 = 2       // TRAP_TRACE: a single-step completed
    /// ptrace_notify(SIGTRAP) after a signal frame was set up for a stepping thread: the pc is the
    /// handler's first instruction, not yet executed (arch/x86/kernel/signal.c, signal_setup_done).
    static let handlerEntry: Int32 = 5
    static let kernel: Int32 = 0x80   // SI_KERNEL: an int3 ran
}

/// The single-step half of a trace session: it owns one thread at a time, steps it, keeps its
/// shadow call stack, and hands every other event back to the hook engine
/// (through `StepperHost`: the engine's narrow face, and the `SessionState` they share).
///
/// The stepped thread never executes one of graft's int3s: before each step, a pc that holds a
/// breakpoint has its displaced instruction emulated on the registers (as a hook hit would), or —
/// for the few that run out of line — the original byte is put back for that one step and the int3
/// re-inserted when the step is over.
final class Stepper {
    let options: TraceOptions
    let profile = TraceProfile()
    /// The spec index whose entry breakpoint starts a traced call (`--function`), nil in default mode.
    let traceHook: Int?

    enum Mode { case idle, stepping, steppingOver(returnAddress: UInt64, rsp: UInt64) }
    var mode: Mode = .idle
    var tid: Int32?
    var lastTid: Int32?
    /// A PTRACE_SINGLESTEP was issued and its stop not yet seen.
    var inFlight = false
    var sites: [UInt64: StepSite] = [:]
    var lastPC: UInt64 = 0
    var lastSite = StepSite.unknown
    /// A signal to deliver with the next step; and whether the last step delivered one.
    var pendingSignal: Int32 = 0
    var deliveredSignal = false
    /// The signal the last step delivered (when `deliveredSignal`).
    var deliveredSignalNumber: Int32 = 0
    /// Handler runs let run free (`--signals`), by signal; whether the user was told once.
    var handlersSkipped: [Int32: Int] = [:]
    var toldSkipping = false
    /// A skipped handler interrupted this `syscall`: it runs free after the handler (`skipHandler`).
    var freeSyscall: UInt64?
    /// The stepped thread changed while a call or handler ran free (a goroutine moved to another thread).
    var toldThreadChange = false
    /// A breakpoint whose original byte is back for one step of the stepped thread.
    var pendingRearm: UInt64?
    var baseDepth = 0
    var callInstructions: UInt64 = 0
    var currentFunction = ""
    var callsTraced = 0
    var singleSteps: UInt64 = 0
    var signalsDelivered = 0
    var startedAt: UInt64 = 0
    var finishedAt: UInt64 = 0
    var warnedDepth = false
    /// The stepped thread and the tracer confined to one CPU while it is stepped (AffinityHold).
    var affinity = AffinityHold()
    /// A `.traceProgress` went out since the last event: the engine should flush (and so refresh the
    /// status line).
    var progressReported = false
    /// --all-stop with --function: threads asked to stop for the current call, and those stopped.
    var stopping: Set<Int32> = []
    var held: Set<Int32> = []
    var functionIndexCache: (start: UInt64, end: UInt64, index: Int)?
    /// The profile entry of unnamed code without an `.eh_frame` function, by module (or mapping).
    var unnamedCode: [String: Int] = [:]
    /// What the thread must do after the instruction just accounted (see `continueAfterAccount`).
    var action: Action = .next

    init(options: TraceOptions, traceHook: Int?) {
        self.options = options
        self.traceHook = traceHook
        _ = profile.intern(TraceFunction(module: nil, name: nil, start: 0))  // index 0: outside any file
    }

    var elapsed: UInt64 {
        guard startedAt > 0 else { return 0 }
        return (finishedAt > 0 ? finishedAt : graft_monotonic_ns()) &- startedAt
    }

    var isStepping: Bool { if case .stepping = mode { return true } else { return false } }

    /// The next instruction to step is a system call (it may block: flush output first).
    var lastWasSyscall: Bool { lastSite.kind == .syscall }

    /// The stepped thread stopped for an event (clone, fork): step on, delivering `signal`.
    func stepOn(_ host: some StepperHost, signal: Int32) throws {
        if signal != 0 { pendingSignal = signal }
        inFlight = false
        try issueStep(host)
    }

    /// The current function's name, for a status line.
    var statusFunction: String { currentFunction }

    // MARK: - Starting

    /// Default mode: seed the shadow stack from a libunwind backtrace of the (stopped) thread and
    /// issue its first step. Returns the threads that must stay stopped.
    func startDefault(_ host: some StepperHost) throws -> Set<Int32> {
        let tracee = host.tracee
        let thread = options.tid ?? tracee.pid
        guard tracee.isTraced(thread) else {
            throw GraftError.usage("thread \(thread) is not a thread of process \(tracee.pid) (see /proc/\(tracee.pid)/task)")
        }
        tid = thread
        lastTid = thread
        affinity.hold(thread)
        var registers = try tracee.registers(of: thread)
        // Outermost first; a frame's return address is the pc of the frame above it.
        let frames = host.backtrace(of: thread)
        var seeded: [(function: Int, returnAddress: UInt64)] = []
        for (i, frame) in frames.enumerated() {
            let lookup = i == 0 ? frame.pc : frame.pc &- 1
            let returnAddress = i + 1 < frames.count ? frames[i + 1].pc : 0
            seeded.append((functionIndex(at: lookup, host: host), returnAddress))
        }
        if seeded.isEmpty { seeded = [(functionIndex(at: registers.rip, host: host), 0)] }
        profile.seed(seeded.reversed())
        baseDepth = max(0, profile.depth - 1)
        mode = .stepping
        startedAt = graft_monotonic_ns()
        // A signal that arrived while graft attached goes with the first step, not at detach.
        pendingSignal = tracee.takeFirstHeldSignal(of: thread)
        // A thread stopped inside a blocking system call sits just past its `syscall` with a restart
        // code in rax: its first step re-executes that syscall (the kernel rewinds rip by 2).
        let restart: ClosedRange<Int64> = -516 ... -512
        if Int64(bitPattern: registers.origRax) >= 0, restart.contains(Int64(bitPattern: registers.rax)),
           site(at: registers.rip &- 2, host: host).kind == .syscall {
            lastPC = registers.rip &- 2
            lastSite = site(at: lastPC, host: host)
            try issueStep(host)
            return options.allStop ? Set(tracee.threadIDs) : [thread]
        }
        lastPC = registers.rip
        lastSite = site(at: lastPC, host: host)
        try advance(&registers, host)
        return options.allStop ? Set(tracee.threadIDs) : [thread]
    }

    /// Whether a hit on `breakpoint` should start a traced call.
    func wantsToTrace(_ breakpoint: Breakpoint) -> Bool {
        guard let traceHook, breakpoint.entryHook == traceHook, case .idle = mode, callsTraced < options.calls else { return false }
        return true
    }

    /// `--function`: thread `tid` is stopped on the entry breakpoint (rip already rewound to it).
    func begin(_ thread: Int32, registers: inout Registers, breakpoint: Breakpoint, host: some StepperHost,
               onEvent: (HookEvent) -> Void) throws {
        tid = thread
        lastTid = thread
        mode = .stepping
        affinity.hold(thread)
        try host.tracee.setRegisters(registers, of: thread)  // rip back on the breakpoint
        if startedAt == 0 { startedAt = graft_monotonic_ns() }
        let returnAddress = try host.tracee.readWord(at: registers.rsp, via: thread)
        let function = functionIndex(at: breakpoint.address, host: host)
        baseDepth = profile.depth
        callInstructions = 0
        profile.enter(function, returnAddress: returnAddress, entryRSP: registers.rsp)
        currentFunction = profile.functions[function].displayName
        onEvent(.traceCall(TraceCall(tid: thread, function: currentFunction, began: true, instructions: 0, number: callsTraced + 1)))
        // The hook sits after an endbr64, which the thread has executed already: count it.
        let start = profile.functions[function].start
        if start != 0, start < breakpoint.address, site(at: start, host: host).size == 4,
           breakpoint.address == start + 4 {
            account(pc: start, site: site(at: start, host: host), newPC: breakpoint.address, rsp: registers.rsp,
                    host: host, onEvent: onEvent)
        }
        if options.allStop {
            for other in host.tracee.threadIDs where other != thread && !host.session.parked.contains(other) {
                try? host.tracee.interrupt(other)
                stopping.insert(other)
            }
        }
        lastPC = registers.rip
        lastSite = site(at: lastPC, host: host)
        try advance(&registers, host, onEvent: onEvent)
    }

    // MARK: - Events of the stepped thread

    /// Handles `event` if it belongs to the stepped thread (or to --all-stop); nil hands it back.
    func intercept(_ event: TraceEvent, host: some StepperHost, onEvent: (HookEvent) -> Void) throws -> Bool? {
        switch event {
        case .interrupted(let other) where stopping.contains(other):
            stopping.remove(other)
            host.tracee.clearGroupStop(other)
            held.insert(other)
            host.session.parked.insert(other)
            return false
        default:
            break
        }
        guard let tid else { return nil }
        switch (event, mode) {
        case (.trap(let who), .stepping) where who == tid:
            try stepTrap(host, onEvent: onEvent)
            defer { progressReported = false }
            return options.reportSteps || progressReported
        case (.trap(let who), .steppingOver(let returnAddress, let rsp)):
            // Back from the call or handler graft let run: step on from the return address. The same
            // stack pointer on another thread is the same stack: a goroutine that moved (Go's
            // scheduler may resume a preempted goroutine on another thread). Follow it there.
            if who != tid, (try? host.tracee.programCounter(of: who)) != returnAddress &+ 1 { return nil }
            var registers = try host.tracee.registers(of: who)
            guard registers.rip &- 1 == returnAddress, registers.rsp == rsp &+ 8 else { return nil }
            if who != tid { adopt(who, onEvent: onEvent) }
            registers.rip = returnAddress
            try host.tracee.setRegisters(registers, of: who)
            mode = .stepping
            lastPC = returnAddress
            lastSite = site(at: returnAddress, host: host)
            if try accountFreeSyscall(&registers, host: host, onEvent: onEvent) {
                try advance(&registers, host, onEvent: onEvent)
            }
            return false
        case (.signal(let who, let signal), .stepping) where who == tid:
            host.session.signalsSeen.insert(signal)
            if signal == SIGCONT { host.tracee.clearGroupStop(tid) }
            inFlight = false
            pendingSignal = signal
            try issueStep(host)
            return false
        case (.interrupted(let who), .stepping) where who == tid, (.other(let who, _), .stepping) where who == tid:
            host.tracee.clearGroupStop(tid)
            inFlight = false
            try issueStep(host)
            return false
        case (.newThread(let parent, let child), .stepping) where parent == tid && options.allStop:
            // --all-stop: a thread the stepped thread creates is held like the others.
            affinity.releaseChild(child)
            if host.session.earlyStops.remove(child) != nil {
                held.insert(child)
                host.session.parked.insert(child)
            } else {
                stopping.insert(child)  // its first stop is still to come
            }
            inFlight = false
            try issueStep(host)
            return false
        case (.groupStop(let who, _), .stepping) where who == tid:
            // inFlight stays set: the step's SIGTRAP may still be queued behind the group stop, and
            // teardown must take it before detaching.
            try host.tracee.listen(tid)
            return false
        case (.threadExited(let who, let status), _) where who == tid:
            onEvent(.notice("thread \(tid) exited while traced"))
            affinity.release()
            profile.truncate(to: baseDepth)  // its frames are gone: the next traced call starts clean
            self.tid = nil
            inFlight = false
            pendingRearm = nil
            if traceHook == nil || callsTraced + 1 >= options.calls {
                if traceHook != nil { callsTraced += 1 }
                finishedAt = graft_monotonic_ns()
                // A thread killed by a signal is a process dying: a fatal signal takes every thread
                // (the traced one often reports first, SIGKILL included).
                if host.session.end == nil, case .killed = status { host.session.end = .targetExited(status) }
                if host.session.end == nil, who != host.tracee.pid { host.session.end = .threadExited(who) }
            } else {
                callsTraced += 1
                mode = .idle
                releaseHeld(host)
            }
            return nil  // the engine forgets the thread (and ends the session if it was the process)
        default:
            return nil
        }
    }

    /// The stepped thread's SIGTRAP stop: a step completed, a signal handler was entered, the
    /// target's own int3 ran, or someone sent it a SIGTRAP.
    func stepTrap(_ host: some StepperHost, onEvent: (HookEvent) -> Void) throws {
        guard let tid else { return }
        inFlight = false
        singleSteps &+= 1
        var registers = try host.tracee.registers(of: tid)
        let code = host.tracee.signalCode(of: tid) ?? TrapCode.trace
        if let address = pendingRearm, code > 0 {
            try host.tracee.writeMemory(at: address, bytes: [X86_64.int3])
            pendingRearm = nil
        }
        // Cheap: the follower itself looks at /proc at most every 2 ms.
        if singleSteps & 0x3f == 1 { host.followCPU(of: tid) }  // one follower per tracer thread
        if code == TrapCode.handlerEntry && deliveredSignal {
            // The interrupted instruction did not run; the handler is entered like a call whose
            // return address (the signal trampoline) is on the stack.
            deliveredSignal = false
            if !options.signals.steps(deliveredSignalNumber),
               try skipHandler(signal: deliveredSignalNumber, registers: registers, host: host, onEvent: onEvent) {
                return
            }
            let returnAddress = (try? host.tracee.readWord(at: registers.rsp, via: tid)) ?? 0
            profile.enter(functionIndex(at: registers.rip, host: host), returnAddress: returnAddress, entryRSP: registers.rsp)
            lastPC = registers.rip
            lastSite = site(at: lastPC, host: host)
            try advance(&registers, host, onEvent: onEvent)
            return
        }
        deliveredSignal = false
        if code <= 0 {
            // A SIGTRAP sent by kill/tgkill: the target's to handle. The step may or may not have run.
            pendingSignal = SIGTRAP
            if registers.rip == lastPC {
                try issueStep(host)
                return
            }
        }
        if lastSite.rep && registers.rip == lastPC {
            try issueStep(host)  // one more iteration of the same rep instruction
            return
        }
        let executedInt3 = code == TrapCode.kernel && lastSite.kind == .interrupt
        if lastSite.pushesFlags { clearPushedTrapFlag(at: registers.rsp, host: host) }
        account(pc: lastPC, site: lastSite, newPC: registers.rip, rsp: registers.rsp, host: host, onEvent: onEvent)
        if executedInt3 { pendingSignal = SIGTRAP }  // the target's own int3: its SIGTRAP is its own
        try afterAccount(&registers, host, onEvent: onEvent)
    }

    /// A stepped `pushf` saved rflags with the trap flag graft set for the step. Popped later — after
    /// graft stopped stepping the thread — it would turn single-stepping back on with no tracer, and
    /// the first trap would kill the process (Go's asynchronous preemption pushes and pops flags
    /// around every preemption). gdb's displaced-step fix-up clears TF in the pushed word; so does
    /// graft. A program that sets TF itself does so with popf/iret, not by stepping under graft.
    func clearPushedTrapFlag(at rsp: UInt64, host: some StepperHost) {
        guard let tid, let pushed = try? host.tracee.readWord(at: rsp, via: tid), pushed & 0x100 != 0 else { return }
        try? host.tracee.writeWord(pushed & ~0x100, at: rsp, via: tid)
    }

    /// Runs a `popfq` on the registers instead of stepping it. PTRACE_SINGLESTEP over popf makes the
    /// kernel forget that it set the trap flag (step.c, is_setting_trap_flag: TIF_FORCED_TF cleared,
    /// never set again while TIF_SINGLESTEP stays): from then on every signal frame saves TF, and a
    /// handler returning after graft detached — or CONT, or DETACH itself — leaves TF on and the
    /// thread dies of SIGTRAP (seen on Go, whose asynchronous preemption ends in POPFQ). Ring 3 popf:
    /// the arithmetic flags, DF, OF, NT, AC and ID come from the stack; IF/IOPL stay; TF stays graft's.
    func emulatePopf(_ registers: inout Registers, tid: Int32, host: some StepperHost) throws {
        let popped = try host.tracee.readWord(at: registers.rsp, via: tid)
        let settable: UInt64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x4000 | 0x40000 | 0x200000
        registers.eflags = (registers.eflags & ~settable) | (popped & settable)
        registers.rsp &+= 8
        registers.rip &+= UInt64(lastSite.size)
        try host.tracee.setRegisters(registers, of: tid)
    }

    // MARK: - All-stop and teardown

    func releaseHeld(_ host: some StepperHost) {
        for other in held {
            host.session.parked.remove(other)
            try? host.tracee.resume(other)
        }
        held.removeAll()
        stopping.removeAll()
    }

    /// Teardown saw a SIGTRAP stop of the stepped thread: the last step's (swallow it) or the
    /// target's own (deliver it at detach). True when it was the stepped thread's.
    func absorbFinalTrap(_ who: Int32, host: some StepperHost) -> Bool {
        guard who == tid, inFlight else { return false }
        inFlight = false
        let code = host.tracee.signalCode(of: who) ?? TrapCode.trace
        if code <= 0 || (code == TrapCode.kernel && lastSite.kind == .interrupt) {
            host.tracee.hold(signal: SIGTRAP, for: who)
        }
        if finishedAt == 0 { finishedAt = graft_monotonic_ns() }
        return true
    }

    /// Teardown, once the stepped thread is stopped for good: if its last step was a `pushf` that
    /// completed (the trap was swallowed or consumed in teardown), clear TF in the pushed word; and
    /// make sure the trap flag is off before it runs untraced.
    func settleLastStep(_ host: some StepperHost) {
        affinity.release()
        guard let tid, let registers = try? host.tracee.registers(of: tid) else { return }
        if getenv("GRAFT_DEBUG_SETTLE") != nil { writeDebug("settle \(tid): rip \(hex(registers.rip)) eflags \(hex(registers.eflags)) last \(hex(lastPC)) inflight \(inFlight)\n") }
        if lastSite.pushesFlags, registers.rip == lastPC &+ UInt64(lastSite.size) {
            clearPushedTrapFlag(at: registers.rsp, host: host)
        }
        dropTrapFlag(tid, host: host)
    }

    /// Before a stepped thread runs on without stepping (PTRACE_CONT, detach): clear the trap flag if
    /// the kernel no longer knows it set it. It forgets after a stepped `popf` (or `iret`):
    /// arch/x86/kernel/step.c clears TIF_FORCED_TF when "the instruction we will trace" may change
    /// TF, and while TIF_SINGLESTEP stays set it never sets it again — so CONT and DETACH leave TF on,
    /// and the thread's next instruction traps with nobody tracing it (Go's asynchronous preemption,
    /// which ends in POPFQ, killed the target this way). While the kernel does know, GETREGS hides
    /// TF and there is nothing to clear.
    func dropTrapFlag(_ thread: Int32, host: some StepperHost) {
        guard var registers = try? host.tracee.registers(of: thread), registers.eflags & 0x100 != 0 else { return }
        registers.eflags &= ~0x100
        try? host.tracee.setRegisters(registers, of: thread)
    }

    /// The session is ending: note the time.
    func finish() {
        if finishedAt == 0, startedAt > 0 { finishedAt = graft_monotonic_ns() }
    }

    /// The stepped thread, if a step of it may still be in flight (teardown must consume a queued
    /// SIGTRAP of it before detaching).
    var threadWithStepInFlight: Int32? { inFlight ? tid : nil }
}
