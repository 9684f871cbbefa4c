import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// What graft needs to know of one instruction address, decoded once (the step loop's cache).
struct StepSite {
    enum Kind: UInt8 { case other, call, ret, jump, conditional, syscall, interrupt }
    let size: UInt8
    let kind: Kind
    /// `rep` string instruction: PTRACE_SINGLESTEP stops after each iteration with the pc unchanged.
    let rep: Bool
    /// Index into the profile's functions.
    let function: Int
    let text: String?
    /// `pushf`: it stores rflags — with the trap flag PTRACE_SINGLESTEP set — on the stack.
    var pushesFlags = false
    /// `popfq` (9d alone): emulated, never stepped (see `Stepper.emulatePopf`).
    var popsFlags = false
    static let unknown = StepSite(size: 0, kind: .other, rep: false, function: 0, text: nil)
}

/// si_code values of a SIGTRAP stop (asm-generic/siginfo.h, include/linux/ptrace.h).
private enum TrapCode {
    static let brkpt: Int32 = 1       // TRAP_BRKPT: x86 reports a stepped syscall this way
    static let trace: Int32 = 2       // TRAP_TRACE: a single-step completed
    /// ptrace_notify(SIGTRAP) after a signal frame was set up for a stepping thread: the pc is the
    /// handler's first instruction, not yet executed (arch/x86/kernel/signal.c, signal_setup_done).
    static let handlerEntry: Int32 = 5
    static let kernel: Int32 = 0x80   // SI_KERNEL: an int3 ran
}

/// The single-step half of a trace session: it owns one thread at a time, steps it, keeps its
/// shadow call stack, and hands every other event back to the hook engine.
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
    private(set) var mode: Mode = .idle
    private(set) var tid: Int32?
    private(set) var lastTid: Int32?
    /// A PTRACE_SINGLESTEP was issued and its stop not yet seen.
    private(set) var inFlight = false
    private var sites: [UInt64: StepSite] = [:]
    private var lastPC: UInt64 = 0
    private var lastSite = StepSite.unknown
    /// A signal to deliver with the next step; and whether the last step delivered one.
    private var pendingSignal: Int32 = 0
    private var deliveredSignal = false
    /// A breakpoint whose original byte is back for one step of the stepped thread.
    private var pendingRearm: UInt64?
    private var baseDepth = 0
    private var callInstructions: UInt64 = 0
    private var currentFunction = ""
    private(set) var callsTraced = 0
    private(set) var singleSteps: UInt64 = 0
    private(set) var signalsDelivered = 0
    private var startedAt: UInt64 = 0
    private var finishedAt: UInt64 = 0
    private var warnedDepth = false
    /// A `.traceProgress` went out since the last event: the engine should flush (and so refresh the
    /// status line).
    private var progressReported = false
    /// --all-stop with --function: threads asked to stop for the current call, and those stopped.
    private var stopping: Set<Int32> = []
    private(set) var held: Set<Int32> = []
    private var functionIndexCache: (start: UInt64, end: UInt64, index: Int)?

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
    func stepOn(_ engine: HookEngine, signal: Int32) throws {
        if signal != 0 { pendingSignal = signal }
        inFlight = false
        try issueStep(engine)
    }

    /// The current function's name, for a status line.
    var statusFunction: String { currentFunction }

    // MARK: - Starting

    /// Default mode: seed the shadow stack from a libunwind backtrace of the (stopped) thread and
    /// issue its first step. Returns the threads that must stay stopped.
    func startDefault(_ engine: HookEngine) throws -> Set<Int32> {
        let tracee = engine.tracee
        let thread = options.tid ?? tracee.pid
        guard tracee.isTraced(thread) else {
            throw GraftError.usage("thread \(thread) is not a thread of process \(tracee.pid) (see /proc/\(tracee.pid)/task)")
        }
        tid = thread
        lastTid = thread
        var registers = try tracee.registers(of: thread)
        // Outermost first; a frame's return address is the pc of the frame above it.
        let frames = engine.unwinder.backtrace(of: thread)
        var seeded: [(function: Int, returnAddress: UInt64)] = []
        for (i, frame) in frames.enumerated() {
            let lookup = i == 0 ? frame.pc : frame.pc &- 1
            let returnAddress = i + 1 < frames.count ? frames[i + 1].pc : 0
            seeded.append((functionIndex(at: lookup, engine: engine), returnAddress))
        }
        if seeded.isEmpty { seeded = [(functionIndex(at: registers.rip, engine: engine), 0)] }
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
           site(at: registers.rip &- 2, engine: engine).kind == .syscall {
            lastPC = registers.rip &- 2
            lastSite = site(at: lastPC, engine: engine)
            try issueStep(engine)
            return options.allStop ? Set(tracee.threadIDs) : [thread]
        }
        lastPC = registers.rip
        lastSite = site(at: lastPC, engine: engine)
        try advance(&registers, engine)
        return options.allStop ? Set(tracee.threadIDs) : [thread]
    }

    /// Whether a hit on `breakpoint` should start a traced call.
    func wantsToTrace(_ breakpoint: Breakpoint) -> Bool {
        guard let traceHook, breakpoint.entryHook == traceHook, case .idle = mode, callsTraced < options.calls else { return false }
        return true
    }

    /// `--function`: thread `tid` is stopped on the entry breakpoint (rip already rewound to it).
    func begin(_ thread: Int32, registers: inout Registers, breakpoint: Breakpoint, engine: HookEngine,
               onEvent: (HookEvent) -> Void) throws {
        tid = thread
        lastTid = thread
        mode = .stepping
        try engine.tracee.setRegisters(registers, of: thread)  // rip back on the breakpoint
        if startedAt == 0 { startedAt = graft_monotonic_ns() }
        let returnAddress = try engine.tracee.readWord(at: registers.rsp, via: thread)
        let function = functionIndex(at: breakpoint.address, engine: engine)
        baseDepth = profile.depth
        callInstructions = 0
        profile.enter(function, returnAddress: returnAddress, entryRSP: registers.rsp)
        currentFunction = profile.functions[function].displayName
        onEvent(.traceCall(TraceCall(tid: thread, function: currentFunction, began: true, instructions: 0, number: callsTraced + 1)))
        // The hook sits after an endbr64, which the thread has executed already: count it.
        let start = profile.functions[function].start
        if start != 0, start < breakpoint.address, site(at: start, engine: engine).size == 4,
           breakpoint.address == start + 4 {
            account(pc: start, site: site(at: start, engine: engine), newPC: breakpoint.address, rsp: registers.rsp,
                    engine: engine, onEvent: onEvent)
        }
        if options.allStop {
            for other in engine.tracee.threadIDs where other != thread && !engine.parked.contains(other) {
                try? engine.tracee.interrupt(other)
                stopping.insert(other)
            }
        }
        lastPC = registers.rip
        lastSite = site(at: lastPC, engine: engine)
        try advance(&registers, engine, onEvent: onEvent)
    }

    // MARK: - Events of the stepped thread

    /// Handles `event` if it belongs to the stepped thread (or to --all-stop); nil hands it back.
    func intercept(_ event: TraceEvent, engine: HookEngine, onEvent: (HookEvent) -> Void) throws -> Bool? {
        switch event {
        case .interrupted(let other) where stopping.contains(other):
            stopping.remove(other)
            engine.tracee.clearGroupStop(other)
            held.insert(other)
            engine.parked.insert(other)
            return false
        default:
            break
        }
        guard let tid else { return nil }
        switch (event, mode) {
        case (.trap(let who), .stepping) where who == tid:
            try stepTrap(engine, onEvent: onEvent)
            defer { progressReported = false }
            return options.reportSteps || progressReported
        case (.trap(let who), .steppingOver(let returnAddress, let rsp)) where who == tid:
            var registers = try engine.tracee.registers(of: tid)
            guard registers.rip &- 1 == returnAddress, registers.rsp == rsp &+ 8 else { return nil }
            // Back from the call graft let run: step on from the return address.
            registers.rip = returnAddress
            try engine.tracee.setRegisters(registers, of: tid)
            mode = .stepping
            lastPC = returnAddress
            lastSite = site(at: returnAddress, engine: engine)
            try advance(&registers, engine, onEvent: onEvent)
            return false
        case (.signal(let who, let signal), .stepping) where who == tid:
            engine.signalsSeen.insert(signal)
            if signal == SIGCONT { engine.tracee.clearGroupStop(tid) }
            inFlight = false
            pendingSignal = signal
            try issueStep(engine)
            return false
        case (.interrupted(let who), .stepping) where who == tid, (.other(let who, _), .stepping) where who == tid:
            engine.tracee.clearGroupStop(tid)
            inFlight = false
            try issueStep(engine)
            return false
        case (.newThread(let parent, let child), .stepping) where parent == tid && options.allStop:
            // --all-stop: a thread the stepped thread creates is held like the others.
            if engine.earlyStops.remove(child) != nil {
                held.insert(child)
                engine.parked.insert(child)
            } else {
                stopping.insert(child)  // its first stop is still to come
            }
            inFlight = false
            try issueStep(engine)
            return false
        case (.groupStop(let who, _), .stepping) where who == tid:
            // inFlight stays set: the step's SIGTRAP may still be queued behind the group stop, and
            // teardown must take it before detaching.
            try engine.tracee.listen(tid)
            return false
        case (.threadExited(let who, let status), _) where who == tid:
            onEvent(.notice("thread \(tid) exited while traced"))
            profile.truncate(to: baseDepth)  // its frames are gone: the next traced call starts clean
            self.tid = nil
            inFlight = false
            pendingRearm = nil
            if traceHook == nil || callsTraced + 1 >= options.calls {
                if traceHook != nil { callsTraced += 1 }
                finishedAt = graft_monotonic_ns()
                // A thread killed by a signal is a process dying: a fatal signal takes every thread
                // (the traced one often reports first, SIGKILL included).
                if engine.end == nil, case .killed = status { engine.end = .targetExited(status) }
                if engine.end == nil, who != engine.tracee.pid { engine.end = .threadExited(who) }
            } else {
                callsTraced += 1
                mode = .idle
                releaseHeld(engine)
            }
            return nil  // the engine forgets the thread (and ends the session if it was the process)
        default:
            return nil
        }
    }

    /// The stepped thread's SIGTRAP stop: a step completed, a signal handler was entered, the
    /// target's own int3 ran, or someone sent it a SIGTRAP.
    private func stepTrap(_ engine: HookEngine, onEvent: (HookEvent) -> Void) throws {
        guard let tid else { return }
        inFlight = false
        singleSteps &+= 1
        var registers = try engine.tracee.registers(of: tid)
        let code = engine.tracee.signalCode(of: tid) ?? TrapCode.trace
        if let address = pendingRearm, code > 0 {
            try engine.tracee.writeMemory(at: address, bytes: [X86_64.int3])
            pendingRearm = nil
        }
        // Cheap: the follower itself looks at /proc at most every 2 ms.
        if singleSteps & 0x3f == 1 { engine.cpuFollower.observe(process: engine.tracee.pid, thread: tid) }  // one follower per tracer thread
        if code == TrapCode.handlerEntry && deliveredSignal {
            // The interrupted instruction did not run; the handler is entered like a call whose
            // return address (the signal trampoline) is on the stack.
            deliveredSignal = false
            let returnAddress = (try? engine.tracee.readWord(at: registers.rsp, via: tid)) ?? 0
            profile.enter(functionIndex(at: registers.rip, engine: engine), returnAddress: returnAddress, entryRSP: registers.rsp)
            lastPC = registers.rip
            lastSite = site(at: lastPC, engine: engine)
            try advance(&registers, engine, onEvent: onEvent)
            return
        }
        deliveredSignal = false
        if code <= 0 {
            // A SIGTRAP sent by kill/tgkill: the target's to handle. The step may or may not have run.
            pendingSignal = SIGTRAP
            if registers.rip == lastPC {
                try issueStep(engine)
                return
            }
        }
        if lastSite.rep && registers.rip == lastPC {
            try issueStep(engine)  // one more iteration of the same rep instruction
            return
        }
        let executedInt3 = code == TrapCode.kernel && lastSite.kind == .interrupt
        if lastSite.pushesFlags { clearPushedTrapFlag(at: registers.rsp, engine: engine) }
        account(pc: lastPC, site: lastSite, newPC: registers.rip, rsp: registers.rsp, engine: engine, onEvent: onEvent)
        if executedInt3 { pendingSignal = SIGTRAP }  // the target's own int3: its SIGTRAP is its own
        try afterAccount(&registers, engine, onEvent: onEvent)
    }

    /// A stepped `pushf` saved rflags with the trap flag graft set for the step. Popped later — after
    /// graft stopped stepping the thread — it would turn single-stepping back on with no tracer, and
    /// the first trap would kill the process (Go's asynchronous preemption pushes and pops flags
    /// around every preemption). gdb's displaced-step fix-up clears TF in the pushed word; so does
    /// graft. A program that sets TF itself does so with popf/iret, not by stepping under graft.
    private func clearPushedTrapFlag(at rsp: UInt64, engine: HookEngine) {
        guard let tid, let pushed = try? engine.tracee.readWord(at: rsp, via: tid), pushed & 0x100 != 0 else { return }
        try? engine.tracee.writeWord(pushed & ~0x100, at: rsp, via: tid)
    }

    /// Runs a `popfq` on the registers instead of stepping it. PTRACE_SINGLESTEP over popf makes the
    /// kernel forget that it set the trap flag (step.c, is_setting_trap_flag: TIF_FORCED_TF cleared,
    /// never set again while TIF_SINGLESTEP stays): from then on every signal frame saves TF, and a
    /// handler returning after graft detached — or CONT, or DETACH itself — leaves TF on and the
    /// thread dies of SIGTRAP (seen on Go, whose asynchronous preemption ends in POPFQ). Ring 3 popf:
    /// the arithmetic flags, DF, OF, NT, AC and ID come from the stack; IF/IOPL stay; TF stays graft's.
    private func emulatePopf(_ registers: inout Registers, tid: Int32, engine: HookEngine) throws {
        let popped = try engine.tracee.readWord(at: registers.rsp, via: tid)
        let settable: UInt64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x4000 | 0x40000 | 0x200000
        registers.eflags = (registers.eflags & ~settable) | (popped & settable)
        registers.rsp &+= 8
        registers.rip &+= UInt64(lastSite.size)
        try engine.tracee.setRegisters(registers, of: tid)
    }

    // MARK: - Stepping

    private var action: Action = .next
    private enum Action {
        case next
        case stepOver(returnAddress: UInt64, rsp: UInt64, callee: Int)
        case callDone
        case limit
    }

    /// Runs the instructions the tracer can run itself (emulated breakpoints), then issues the next
    /// PTRACE_SINGLESTEP — or, at a limit, leaves the thread stopped.
    private func advance(_ registers: inout Registers, _ engine: HookEngine, onEvent: (HookEvent) -> Void = { _ in }) throws {
        guard let tid else { return }
        while true {
            if lastSite.popsFlags && engine.breakpoints[registers.rip] == nil {
                let pc = registers.rip
                try emulatePopf(&registers, tid: tid, engine: engine)
                singleSteps &+= 1
                account(pc: pc, site: lastSite, newPC: registers.rip, rsp: registers.rsp, engine: engine, onEvent: onEvent)
                if try !continueAfterAccount(&registers, engine, onEvent: onEvent) { return }
                continue
            }
            guard let breakpoint = engine.breakpoints[registers.rip] else { break }
            switch breakpoint.displaced {
            case .outOfLine, .refused:
                try engine.tracee.writeMemory(at: breakpoint.address, bytes: [breakpoint.originalByte])
                pendingRearm = breakpoint.address
                try issueStep(engine)
                return
            default:
                let pc = registers.rip
                try engine.execute(breakpoint, tid: tid, registers: &registers)
                try engine.tracee.setRegisters(registers, of: tid)
                singleSteps &+= 1
                account(pc: pc, site: lastSite, newPC: registers.rip, rsp: registers.rsp, engine: engine, onEvent: onEvent)
                if try !continueAfterAccount(&registers, engine, onEvent: onEvent) { return }
            }
        }
        try issueStep(engine)
    }

    /// After an instruction was accounted: set up the next one. Returns false when the thread must
    /// not be stepped now (stepped over, call done, limit).
    private func continueAfterAccount(_ registers: inout Registers, _ engine: HookEngine, onEvent: (HookEvent) -> Void) throws -> Bool {
        guard let tid else { return false }
        let next = action
        action = .next
        switch next {
        case .next:
            lastPC = registers.rip
            lastSite = site(at: lastPC, engine: engine)
            return true
        case .limit:
            finishedAt = graft_monotonic_ns()
            holdPendingSignal(engine)
            engine.parked.insert(tid)
            if engine.end == nil { engine.end = .count }
            return false
        case .callDone:
            callsTraced += 1
            onEvent(.traceCall(TraceCall(tid: tid, function: currentFunction, began: false, instructions: callInstructions, number: callsTraced)))
            releaseHeld(engine)
            mode = .idle
            self.tid = nil
            if callsTraced >= options.calls {
                finishedAt = graft_monotonic_ns()
                if pendingSignal != 0 { engine.tracee.hold(signal: pendingSignal, for: tid); pendingSignal = 0 }
                engine.parked.insert(tid)
                if engine.end == nil { engine.end = .callsTraced }
            } else {
                // Its pc may hold a breakpoint: PTRACE_CONT runs into it and the engine serves it.
                dropTrapFlag(tid, engine: engine)
                try engine.tracee.resume(tid, signal: pendingSignal)
                pendingSignal = 0
            }
            return false
        case .stepOver(let returnAddress, let rsp, let callee):
            if try engine.ensureReturnSite(returnAddress, via: tid, onEvent: onEvent) {
                profile.steppedOver(callee)
                mode = .steppingOver(returnAddress: returnAddress, rsp: rsp)
                dropTrapFlag(tid, engine: engine)
                try engine.tracee.resume(tid, signal: pendingSignal)
                pendingSignal = 0
                return false
            }
            if !warnedDepth {
                warnedDepth = true
                onEvent(.notice("--depth: cannot put a breakpoint at \(hex(returnAddress)); stepping into the call instead"))
            }
            profile.enter(callee, returnAddress: returnAddress, entryRSP: rsp, counted: profile.functions[callee].name != nil)
            lastPC = registers.rip
            lastSite = site(at: lastPC, engine: engine)
            return true
        }
    }

    private func afterAccount(_ registers: inout Registers, _ engine: HookEngine, onEvent: (HookEvent) -> Void) throws {
        if try continueAfterAccount(&registers, engine, onEvent: onEvent) {
            try advance(&registers, engine, onEvent: onEvent)
        }
    }

    /// The thread stays stopped until detach: a signal due with the next step is delivered then.
    private func holdPendingSignal(_ engine: HookEngine) {
        guard let tid, pendingSignal != 0 else { return }
        engine.tracee.hold(signal: pendingSignal, for: tid)
        pendingSignal = 0
    }

    private func issueStep(_ engine: HookEngine) throws {
        guard let tid else { return }
        if pendingSignal != 0 {
            deliveredSignal = true
            signalsDelivered += 1
        }
        try engine.tracee.step(tid, signal: pendingSignal)
        pendingSignal = 0
        inFlight = true
    }

    /// Attributes the instruction at `pc`, which ran and left the thread at `newPC`/`rsp`, and
    /// updates the shadow stack; sets `action` when the thread must not simply be stepped on.
    private func account(pc: UInt64, site: StepSite, newPC: UInt64, rsp: UInt64, engine: HookEngine, onEvent: (HookEvent) -> Void) {
        profile.count(site.function)
        callInstructions &+= 1
        if !options.reportSteps, profile.instructions & 0x1fff == 0 {
            onEvent(.traceProgress(steps: profile.instructions, function: profile.functions[site.function].displayName))
            progressReported = true
        }
        if options.reportSteps, let tid {
            let function = profile.functions[site.function]
            onEvent(.step(TraceStep(index: profile.instructions, tid: tid, pc: pc, function: function,
                                    offset: function.start == 0 ? 0 : pc &- function.start, text: site.text, depth: profile.depth)))
        }
        switch site.kind {
        case .call where newPC != pc &+ UInt64(site.size):
            let callee = self.site(at: newPC, engine: engine).function
            let returnAddress = pc &+ UInt64(site.size)
            if let depth = options.depth, profile.depth + 1 - baseDepth > depth {
                action = .stepOver(returnAddress: returnAddress, rsp: rsp, callee: callee)
            } else {
                profile.enter(callee, returnAddress: returnAddress, entryRSP: rsp, counted: profile.functions[callee].name != nil)
            }
        case .ret:
            profile.ret(to: newPC)
            if profile.depth <= baseDepth {
                if traceHook != nil {
                    action = .callDone
                } else if profile.depth == 0 {
                    profile.enterRoot(self.site(at: newPC, engine: engine).function)
                    baseDepth = 0
                } else {
                    baseDepth = profile.depth - 1
                }
            }
        case .jump, .conditional:
            if newPC != pc &+ UInt64(site.size) {
                let target = self.site(at: newPC, engine: engine).function
                let function = profile.functions[target]
                if function.name != nil, function.start == newPC, target != profile.topFunction {
                    profile.tailJump(target)
                }
            }
        default:
            break
        }
        if case .next = action, let steps = options.steps, profile.instructions >= steps { action = .limit }
        if case .stepOver = action, let steps = options.steps, profile.instructions >= steps { action = .limit }
    }

    // MARK: - Decoding and symbols (cached by address)

    func site(at pc: UInt64, engine: HookEngine) -> StepSite {
        if let known = sites[pc] { return known }
        var bytes = (try? engine.tracee.readMemory(at: pc, count: 64)) ?? (try? engine.tracee.readMemory(at: pc, count: 16)) ?? []
        // graft's own int3s are not the code: decode the bytes they replaced.
        for (offset, byte) in bytes.enumerated() where byte == X86_64.int3 {
            if let breakpoint = engine.breakpoints[pc &+ UInt64(offset)] { bytes[offset] = breakpoint.originalByte }
        }
        if let rearm = pendingRearm, rearm >= pc, rearm < pc &+ UInt64(bytes.count), let breakpoint = engine.breakpoints[rearm] {
            bytes[Int(rearm - pc)] = breakpoint.originalByte
        }
        let decoded = bytes.isEmpty ? [] : engine.disassembler.decode(bytes, at: pc, maxCount: 8)
        if decoded.first?.address != pc {
            let site = StepSite(size: 1, kind: .other, rep: false, function: functionIndex(at: pc, engine: engine),
                                text: options.disassemble ? "(bad)" : nil)
            sites[pc] = site
            return site
        }
        for instruction in decoded where sites[instruction.address] == nil {
            let kind: StepSite.Kind
            if instruction.isCall { kind = .call }
            else if instruction.isReturn { kind = .ret }
            else if instruction.isJump { kind = .jump }
            else if instruction.isConditionalBranch { kind = .conditional }
            else if instruction.isSyscall { kind = .syscall }
            else if instruction.isInterrupt { kind = .interrupt }
            else { kind = .other }
            sites[instruction.address] = StepSite(size: UInt8(instruction.size), kind: kind, rep: instruction.hasRepPrefix,
                                                  function: functionIndex(at: instruction.address, engine: engine),
                                                  text: options.disassemble ? instruction.text : nil,
                                                  pushesFlags: instruction.mnemonic.hasPrefix("pushf"),
                                                  popsFlags: instruction.bytes == [0x9d])
        }
        return sites[pc]!
    }

    func functionIndex(at pc: UInt64, engine: HookEngine) -> Int {
        if let cached = functionIndexCache, pc >= cached.start, pc < cached.end { return cached.index }
        guard let resolved = engine.index.symbolize(pc) else {
            return profile.intern(TraceFunction(module: nil, name: nil, start: 0))
        }
        let module = resolved.module?.name
        if let symbol = resolved.symbol, let start = resolved.symbolAddress {
            let index = profile.intern(TraceFunction(module: module, name: symbol.name, start: start))
            if symbol.size > 0 { functionIndexCache = (start, start &+ symbol.size, index) }
            return index
        }
        return profile.intern(TraceFunction(module: module, name: nil, start: 0))
    }

    // MARK: - All-stop and teardown

    private func releaseHeld(_ engine: HookEngine) {
        for other in held {
            engine.parked.remove(other)
            try? engine.tracee.resume(other)
        }
        held.removeAll()
        stopping.removeAll()
    }

    /// Teardown saw a SIGTRAP stop of the stepped thread: the last step's (swallow it) or the
    /// target's own (deliver it at detach). True when it was the stepped thread's.
    func absorbFinalTrap(_ who: Int32, engine: HookEngine) -> Bool {
        guard who == tid, inFlight else { return false }
        inFlight = false
        let code = engine.tracee.signalCode(of: who) ?? TrapCode.trace
        if code <= 0 || (code == TrapCode.kernel && lastSite.kind == .interrupt) {
            engine.tracee.hold(signal: SIGTRAP, for: who)
        }
        if finishedAt == 0 { finishedAt = graft_monotonic_ns() }
        return true
    }

    /// Teardown, once the stepped thread is stopped for good: if its last step was a `pushf` that
    /// completed (the trap was swallowed or consumed in teardown), clear TF in the pushed word; and
    /// make sure the trap flag is off before it runs untraced.
    func settleLastStep(_ engine: HookEngine) {
        guard let tid, let registers = try? engine.tracee.registers(of: tid) else { return }
        if getenv("GRAFT_DEBUG_SETTLE") != nil { writeDebug("settle \(tid): rip \(hex(registers.rip)) eflags \(hex(registers.eflags)) last \(hex(lastPC)) inflight \(inFlight)\n") }
        if lastSite.pushesFlags, registers.rip == lastPC &+ UInt64(lastSite.size) {
            clearPushedTrapFlag(at: registers.rsp, engine: engine)
        }
        dropTrapFlag(tid, engine: engine)
    }

    /// Before a stepped thread runs on without stepping (PTRACE_CONT, detach): clear the trap flag if
    /// the kernel no longer knows it set it. It forgets after a stepped `popf` (or `iret`):
    /// arch/x86/kernel/step.c clears TIF_FORCED_TF when "the instruction we will trace" may change
    /// TF, and while TIF_SINGLESTEP stays set it never sets it again — so CONT and DETACH leave TF on,
    /// and the thread's next instruction traps with nobody tracing it (Go's asynchronous preemption,
    /// which ends in POPFQ, killed the target this way). While the kernel does know, GETREGS hides
    /// TF and there is nothing to clear.
    private func dropTrapFlag(_ thread: Int32, engine: HookEngine) {
        guard var registers = try? engine.tracee.registers(of: thread), registers.eflags & 0x100 != 0 else { return }
        registers.eflags &= ~0x100
        try? engine.tracee.setRegisters(registers, of: thread)
    }

    /// The session is ending: note the time.
    func finish() {
        if finishedAt == 0, startedAt > 0 { finishedAt = graft_monotonic_ns() }
    }

    /// The stepped thread, if a step of it may still be in flight (teardown must consume a queued
    /// SIGTRAP of it before detaching).
    var threadWithStepInFlight: Int32? { inFlight ? tid : nil }
}
