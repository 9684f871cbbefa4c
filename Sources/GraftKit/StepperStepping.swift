import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// Stepping: the instructions the tracer runs itself, the next PTRACE_SINGLESTEP, and the shadow
/// stack's accounting of each instruction that ran.
extension Stepper {
    enum Action {
        case next
        case stepOver(returnAddress: UInt64, rsp: UInt64, callee: Int)
        case callDone
        case limit
    }

    /// Runs the instructions the tracer can run itself (emulated breakpoints), then issues the next
    /// PTRACE_SINGLESTEP — or, at a limit, leaves the thread stopped.
    func advance(_ registers: inout Registers, _ host: some StepperHost, onEvent: (HookEvent) -> Void = { _ in }) throws {
        guard let tid else { return }
        while true {
            if lastSite.popsFlags && host.breakpoints[registers.rip] == nil {
                let pc = registers.rip
                try emulatePopf(&registers, tid: tid, host: host)
                singleSteps &+= 1
                account(pc: pc, site: lastSite, newPC: registers.rip, rsp: registers.rsp, host: host, onEvent: onEvent)
                if try !continueAfterAccount(&registers, host, onEvent: onEvent) { return }
                continue
            }
            guard let breakpoint = host.breakpoints[registers.rip] else { break }
            switch breakpoint.displaced {
            case .outOfLine, .refused:
                try host.tracee.writeMemory(at: breakpoint.address, bytes: [breakpoint.originalByte])
                pendingRearm = breakpoint.address
                try issueStep(host)
                return
            default:
                let pc = registers.rip
                try breakpoint.runDisplaced(on: &registers, tid: tid, tracee: host.tracee)
                try host.tracee.setRegisters(registers, of: tid)
                singleSteps &+= 1
                account(pc: pc, site: lastSite, newPC: registers.rip, rsp: registers.rsp, host: host, onEvent: onEvent)
                if try !continueAfterAccount(&registers, host, onEvent: onEvent) { return }
            }
        }
        try issueStep(host)
    }

    /// After an instruction was accounted: set up the next one. Returns false when the thread must
    /// not be stepped now (stepped over, call done, limit).
    func continueAfterAccount(_ registers: inout Registers, _ host: some StepperHost, onEvent: (HookEvent) -> Void) throws -> Bool {
        guard let tid else { return false }
        let next = action
        action = .next
        switch next {
        case .next:
            lastPC = registers.rip
            lastSite = site(at: lastPC, host: host)
            return true
        case .limit:
            finishedAt = graft_monotonic_ns()
            holdPendingSignal(host)
            host.session.parked.insert(tid)
            if host.session.end == nil { host.session.end = .count }
            return false
        case .callDone:
            callsTraced += 1
            onEvent(.traceCall(TraceCall(tid: tid, function: currentFunction, began: false, instructions: callInstructions, number: callsTraced)))
            releaseHeld(host)
            affinity.release()
            mode = .idle
            self.tid = nil
            if callsTraced >= options.calls {
                finishedAt = graft_monotonic_ns()
                if pendingSignal != 0 { host.tracee.hold(signal: pendingSignal, for: tid); pendingSignal = 0 }
                host.session.parked.insert(tid)
                if host.session.end == nil { host.session.end = .callsTraced }
            } else {
                // Its pc may hold a breakpoint: PTRACE_CONT runs into it and the engine serves it.
                dropTrapFlag(tid, host: host)
                try host.tracee.resume(tid, signal: pendingSignal)
                pendingSignal = 0
            }
            return false
        case .stepOver(let returnAddress, let rsp, let callee):
            if try host.ensureReturnSite(returnAddress, via: tid, onEvent: onEvent) {
                profile.steppedOver(callee)
                mode = .steppingOver(returnAddress: returnAddress, rsp: rsp)
                dropTrapFlag(tid, host: host)
                try host.tracee.resume(tid, signal: pendingSignal)
                pendingSignal = 0
                return false
            }
            if !warnedDepth {
                warnedDepth = true
                onEvent(.notice("--depth: cannot put a breakpoint at \(hex(returnAddress)); stepping into the call instead"))
            }
            profile.enter(callee, returnAddress: returnAddress, entryRSP: rsp, counted: profile.functions[callee].name != nil)
            lastPC = registers.rip
            lastSite = site(at: lastPC, host: host)
            return true
        }
    }

    func afterAccount(_ registers: inout Registers, _ host: some StepperHost, onEvent: (HookEvent) -> Void) throws {
        if try continueAfterAccount(&registers, host, onEvent: onEvent) {
            try advance(&registers, host, onEvent: onEvent)
        }
    }

    /// The thread stays stopped until detach: a signal due with the next step is delivered then.
    func holdPendingSignal(_ host: some StepperHost) {
        guard let tid, pendingSignal != 0 else { return }
        host.tracee.hold(signal: pendingSignal, for: tid)
        pendingSignal = 0
    }

    func issueStep(_ host: some StepperHost) throws {
        guard let tid else { return }
        if pendingSignal != 0 {
            deliveredSignal = true
            deliveredSignalNumber = pendingSignal
            signalsDelivered += 1
        }
        try host.tracee.step(tid, signal: pendingSignal)
        pendingSignal = 0
        inFlight = true
    }

    /// Attributes the instruction at `pc`, which ran and left the thread at `newPC`/`rsp`, and
    /// updates the shadow stack; sets `action` when the thread must not simply be stepped on.
    func account(pc: UInt64, site: StepSite, newPC: UInt64, rsp: UInt64, host: some StepperHost, onEvent: (HookEvent) -> Void) {
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
            let callee = self.site(at: newPC, host: host).function
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
                    profile.enterRoot(self.site(at: newPC, host: host).function)
                    baseDepth = 0
                } else {
                    baseDepth = profile.depth - 1
                }
            }
        case .jump, .conditional:
            if newPC != pc &+ UInt64(site.size) {
                let target = self.site(at: newPC, host: host).function
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
}
