import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// The end of a session, on every path: every thread stopped, every byte put back, scratch pages
/// unmapped, detach; and fork children released (they inherit the int3s).
extension HookEngine {
    // MARK: - Fork children

    /// A fork child inherits the int3 bytes; it would die of SIGTRAP at its first call. Put the
    /// original bytes back in its copy of the memory and let it go untraced.
    func releaseForkChild(_ child: Int32) {
        if session.earlyStops.remove(child) == nil { _ = try? tracee.waitForFirstStop(of: child) }
        giveOriginalAffinity(to: child)
        breakpoints.restoreAll(inForkChild: child, of: tracee)
        tracee.detachThread(child)
    }

    /// A thread or process created while graft held its creator on one CPU (the stepped thread,
    /// a hot hooked thread: `AffinityHold`) inherited that narrow mask: it gets the original.
    func giveOriginalAffinity(to child: Int32) {
        stepper?.affinity.releaseChild(child)
        cpuFollower.hold.releaseChild(child)
    }

    // MARK: - Teardown

    /// Stops every thread, removes every breakpoint, moves threads out of scratch pages, verifies the
    /// code and detaches. Never throws: every step is attempted. True when the code was verified.
    func teardown(onEvent: (HookEvent) -> Void) -> Bool {
        cpuFollower.releaseHold()  // a hot hooked thread held on graft's CPU gets its own mask back
        if case .targetExited = session.end {
            try? tracee.detach()
            return true
        }
        stopEveryThread(onEvent: onEvent)
        stepper?.finish()
        // A signal can still be queued behind the interrupt stop (a terminal's Ctrl-C reaching the
        // whole process group): note it, so launch mode does not send it a second time.
        for tid in tracee.threadIDs {
            for signal in [SIGINT, SIGQUIT] where hasPendingSignal(tid, signal) { session.signalsSeen.insert(signal) }
        }
        // The stepped thread may have been interrupted with its step's SIGTRAP still queued (the
        // kernel reports a pending interrupt first): take that SIGTRAP now, or detaching would
        // deliver it to a thread nobody traces, and the process would die of it.
        if let stepper, let stepped = stepper.threadWithStepInFlight, hasPendingSignal(stepped, SIGTRAP) {
            consumePendingTrap(stepped)
        }
        stepper?.settleLastStep(self)
        // A thread that executed an int3 whose SIGTRAP is still queued behind the interrupt stop: let
        // it report the trap now, so detaching does not deliver a SIGTRAP that would kill the target.
        // rip == breakpoint + 1 alone proves nothing: an emulated one-byte instruction (push rbp)
        // leaves the thread exactly there. Only a queued SIGTRAP says the int3 really ran.
        for tid in tracee.threadIDs {
            guard let registers = try? tracee.registers(of: tid), breakpoints[registers.rip &- 1] != nil,
                  hasPendingSignal(tid, SIGTRAP) else { continue }
            consumePendingTrap(tid)
            if var again = try? tracee.registers(of: tid), breakpoints[again.rip &- 1] != nil {
                again.rip &-= 1  // re-execute the original instruction once it is back
                try? tracee.setRegisters(again, of: tid)
            }
        }
        // The same for a debug-register hit still queued.
        if debugSlots != nil {
            for tid in tracee.threadIDs where hasPendingSignal(tid, SIGTRAP) && ownsHardwareTrap(tid) { consumePendingTrap(tid) }
        }
        let disarmed = disarmHardware()
        let restored = breakpoints.restoreAll(in: tracee) && disarmed
        // No thread may stay in a scratch page: step each one out.
        for tid in tracee.threadIDs {
            var steps = 0
            while let pc = try? tracee.registers(of: tid).rip, scratch.contains(pc), steps < 64 {
                _ = try? tracee.singleStep(tid)
                steps += 1
            }
        }
        unmapScratchIfUnreferenced(onEvent: onEvent)
        try? tracee.detach()
        return restored
    }

    /// Interrupts every running thread and waits until each is stopped, serving what arrives
    /// meanwhile: a breakpoint hit is rewound (the call runs unhooked once the code is restored),
    /// signals are held for delivery at detach, new threads and fork children are handled.
    func stopEveryThread(onEvent: (HookEvent) -> Void) {
        var waiting = Set(tracee.threadIDs).subtracting(session.parked)
        for tid in waiting { try? tracee.interrupt(tid) }
        var rounds = 0
        while !waiting.isEmpty, rounds < 100_000 {
            rounds += 1
            if debugEventsOn, rounds % 50 == 0 {
                let states = waiting.sorted().map { tid in
"\(tid):\(ProcFS.threadState(tracee.pid, tid).map(String.init) ?? "?")"
                }
                writeDebug("teardown: round \(rounds), still waiting for \(states.joined(separator: " "))\n")
            }
            var next = try? tracee.waitForEvent(block: true)
            if debugEventsOn, let next { writeDebug("teardown event \(next)\n") }
            if next == nil {
                if !tracee.isAttached && tracee.threadIDs.isEmpty { return }
                // Woken (EINTR) or nothing to wait for: probe once, and serve what the probe returns.
                next = try? tracee.waitForEvent(block: false)
                if next == nil {
                    if ProcFS.status(tracee.pid) == nil { return }
                    continue
                }
            }
            guard let event = next else { continue }
            switch event {
            case .trap(let tid) where stepper?.absorbFinalTrap(tid, host: self) == true:
                waiting.remove(tid)
            case .trap(let tid):
                if var registers = try? tracee.registers(of: tid), breakpoints[registers.rip &- 1] != nil {
                    registers.rip &-= 1
                    try? tracee.setRegisters(registers, of: tid)
                } else if ownsHardwareTrap(tid) {
                    // A debug-register hit: dropped (the hooked instruction runs once DR7 is clear).
                } else {
                    tracee.hold(signal: SIGTRAP, for: tid)
                }
                waiting.remove(tid)
            case .signal(let tid, let signal):
                session.signalsSeen.insert(signal)
                tracee.hold(signal: signal, for: tid)
                waiting.remove(tid)
            case .groupStop(let tid, _), .interrupted(let tid), .other(let tid, _):
                waiting.remove(tid)
            case .earlyStop(let tid):
                session.earlyStops.insert(tid)
            case .newThread(let parent, let child):
                waiting.remove(parent)
                // The child's first stop is still to come, unless it came early.
                if session.earlyStops.remove(child) == nil { waiting.insert(child) }
            case .forked(let parent, let child, let isVfork):
                if isVfork {
                    vforkChildren.insert(child)
                    tracee.track(child)
                    if session.earlyStops.remove(child) == nil { waiting.insert(child) }
                } else {
                    releaseForkChild(child)
                    onEvent(.notice("fork child \(child) released without breakpoints"))
                }
                waiting.remove(parent)
            case .exec(let tid):
                if vforkChildren.remove(tid) != nil {
                    tracee.detachThread(tid)
                    waiting.remove(tid)
                } else {
                    execHappened = true
                    breakpoints.removeAll()
                    scratch.forget()
                    waiting = waiting.filter { tracee.isTraced($0) }
                    waiting.remove(tid)
                }
            case .threadExited(let tid, let status):
                waiting.remove(tid)
                vforkChildren.remove(tid)
                if tid == tracee.pid, session.end == nil || session.end == .requested { session.end = .targetExited(status) }
            }
        }
    }

    func hasPendingSignal(_ tid: Int32, _ signal: Int32) -> Bool {
        guard let status = ProcFS.readFile("/proc/\(tracee.pid)/task/\(tid)/status") else { return false }
        for line in status.split(separator: "\n") where line.hasPrefix("SigPnd:") || line.hasPrefix("ShdPnd:") {
            let hexText = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).last.map(String.init) ?? ""
            if let mask = UInt64(hexText, radix: 16), mask & (1 << UInt64(signal - 1)) != 0 { return true }
        }
        return false
    }

    /// Resumes `tid` just long enough to take its queued SIGTRAP as a stop (it is delivered before
    /// the thread runs a single instruction) and swallows it.
    func consumePendingTrap(_ tid: Int32) {
        guard (try? tracee.resume(tid)) != nil else { return }
        for _ in 0..<16 {
            guard let event = try? tracee.waitForEvent(block: true) else { continue }
            switch event {
            case .trap(let who) where who == tid:
                return
            case .signal(let who, let signal):
                tracee.hold(signal: signal, for: who)
                if who == tid { return }
            case .interrupted(let who), .groupStop(let who, _), .other(let who, _):
                if who == tid { return }
            case .threadExited(let who, _):
                if who == tid { return }
            default:
                continue
            }
        }
    }

    /// Unmaps the scratch pages unless a thread's stack still holds an address inside them (a
    /// signal frame or call made from an out-of-line copy would return there): then they stay.
    func unmapScratchIfUnreferenced(onEvent: (HookEvent) -> Void) {
        guard !scratch.isEmpty else { return }
        let mappings = (try? ProcMaps.read(pid: tracee.pid)) ?? []
        for tid in tracee.threadIDs {
            // A pc still inside (a thread that could not be stepped out), or registers that cannot
            // be read: keep the pages. A leaked page is harmless; an unmapped pc is a crash.
            guard let registers = try? tracee.registers(of: tid) else {
                onEvent(.notice("scratch pages left mapped: thread \(tid)'s registers could not be read"))
                return
            }
            if scratch.contains(registers.rip) {
                onEvent(.notice("scratch pages left mapped: thread \(tid) is still at \(hex(registers.rip))"))
                return
            }
            let rsp = registers.rsp
            guard let stack = mappings.first(where: { $0.contains(rsp & ~7) }) else { continue }
            let length = Int(min(stack.end - (rsp & ~7), 256 << 10))
            guard let words = try? tracee.readMemory(at: rsp & ~7, count: length) else { continue }
            var offset = 0
            while offset + 8 <= words.count {
                var value: UInt64 = 0
                for i in 0..<8 { value |= UInt64(words[offset + i]) << (8 * UInt64(i)) }
                if scratch.contains(value) {
                    onEvent(.notice("scratch pages left mapped: thread \(tid)'s stack refers to \(hex(value))"))
                    return
                }
                offset += 8
            }
        }
        scratch.unmapAll()
    }
}
