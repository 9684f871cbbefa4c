import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// The debug registers of a session (`graft hook --hardware`, `graft watch`): no byte of code
/// changes. Slots 0..<`shared.count` hold the same breakpoints on every thread — written at arming
/// and into each thread created later (a clone starts with none; a fork child too, so it needs no
/// cleaning). The slots a thread has spare hold the return addresses of its pending calls
/// (`--returns`), per thread. An execute breakpoint traps *before* its instruction with rip at the
/// address and RF set by the kernel, so a plain PTRACE_CONT runs the instruction without trapping
/// again: nothing is displaced. A data breakpoint traps *after* the instruction that wrote.
final class DebugSlots {
    static let count = 4

    struct Shared {
        let address: UInt64
        let condition: DebugCondition
        let length: Int
    }
    /// The session-wide slots, in slot order.
    var shared: [Shared] = []
    /// Execute breakpoints by address (the hooks' entries).
    var hooks: [UInt64: Breakpoint] = [:]
    /// `graft watch`: the data breakpoint (its slot is `watch.slot`).
    var watch: WatchState?
    /// DR7 as written, by thread: a thread missing here has not been armed yet.
    var control: [Int32: DebugControl] = [:]
    /// Per thread: return-address breakpoints in its spare slots.
    var returnSlots: [Int32: [Int: Breakpoint]] = [:]
    /// Threads already told that no slot was left for a return.
    var toldFull: Set<Int32> = []

    /// The execute breakpoint of `tid` at `pc`: a hook's entry or one of its return addresses.
    func executeBreakpoint(at pc: UInt64, thread tid: Int32) -> Breakpoint? {
        if let hook = hooks[pc] { return hook }
        guard let slots = returnSlots[tid] else { return nil }
        for breakpoint in slots.values where breakpoint.address == pc { return breakpoint }
        return nil
    }
}

extension HookEngine {
    /// Puts each planned hook (and the watch, if any) in a debug register of every thread. A fifth
    /// is refused by name; nothing is written unless all fit.
    func armHardware(_ plans: [(hook: Int, breakpoint: Breakpoint, function: String)]) throws {
        guard let slots = debugSlots else { return }
        let watching = slots.watch != nil ? 1 : 0
        if plans.count + watching > DebugSlots.count {
            let names = plans.map { specs[$0.hook].location }
            throw GraftError.usage("\(names.count) hardware breakpoints asked, and x86-64 has four debug registers (DR0–DR3): \(names.prefix(DebugSlots.count).joined(separator: ", ")) take them all, \(names[DebugSlots.count...].joined(separator: ", ")) cannot have one; hook \(names.count - DebugSlots.count == 1 ? "it" : "them") without --hardware (an int3), or fewer functions")
        }
        if plans.count == DebugSlots.count, specs.contains(where: \.catchesReturn) {
            throw GraftError.usage("--returns with --hardware puts each pending call's return address in a spare debug register: four hooks leave none; hook at most three functions")
        }
        for (hook, breakpoint, function) in plans {
            if breakpoint.goABI && specs[hook].catchesReturn {
                armNotices.append("\(function) is Go code: with --hardware, the return of a call whose goroutine blocks and resumes on another thread is not reported (only the calling thread's debug registers hold the return address); without --hardware every return is")
            }
            let slot = slots.shared.count
            breakpoint.hardwareSlot = slot
            slots.shared.append(.init(address: breakpoint.address, condition: .execute, length: 1))
            slots.hooks[breakpoint.address] = breakpoint
            stats.append(HookStatistics(location: specs[hook].location, function: function))
            armed.append(ArmedHook(index: hook, location: specs[hook].location, function: function, address: breakpoint.address,
                                   instruction: breakpoint.instruction.text, strategy: "debug register DR\(slot)"))
        }
        if let watch = slots.watch {
            watch.slot = slots.shared.count
            slots.shared.append(.init(address: watch.address, condition: watch.condition, length: watch.length))
            watch.statIndex = stats.count
            stats.append(HookStatistics(location: watch.location, function: watch.variable))
            armed.append(ArmedHook(index: watch.statIndex, location: watch.location, function: watch.variable, address: watch.address,
                                   instruction: "\(watch.condition == .write ? "write" : "read or write") of \(watch.length) byte\(watch.length == 1 ? "" : "s")",
                                   strategy: "debug register DR\(watch.slot)"))
        }
        var done: [Int32] = []
        do {
            for tid in tracee.threadIDs {
                do {
                    let control = try tracee.debugRegister(7, of: tid)
                    if control & 0xff != 0 {
                        throw GraftError.usage("thread \(tid) of process \(tracee.pid) already has debug registers enabled (DR7 = \(hex(control))): another tool (or a graft session that was killed) left hardware breakpoints; graft will not overwrite them")
                    }
                    try armThread(tid)
                    done.append(tid)
                } catch GraftError.threadVanished {
                    continue  // exiting while being armed: it has nothing to disarm
                }
            }
        } catch {
            for tid in done { try? tracee.setDebugRegister(7, to: 0, of: tid) }
            slots.control.removeAll()
            throw error
        }
    }

    /// Writes the shared slots into one stopped thread (a thread graft has not armed yet).
    func armThread(_ tid: Int32) throws {
        guard let slots = debugSlots else { return }
        var control = DebugControl()
        for (slot, entry) in slots.shared.enumerated() {
            try tracee.setDebugRegister(slot, to: entry.address, of: tid)
            control.enable(slot, entry.condition, length: entry.length)
        }
        try tracee.setDebugRegister(7, to: control.value, of: tid)
        slots.control[tid] = control
    }

    /// A thread graft sees stopped for the first time (created after arming): give it the slots.
    /// A thread that exits meanwhile needs none.
    func armIfNew(_ tid: Int32) {
        guard let slots = debugSlots, slots.control[tid] == nil else { return }
        do {
            try armThread(tid)
        } catch {
            if tracee.processDeath() == nil, ProcFS.threadState(tracee.pid, tid) != nil {
                writeDebug("graft: thread \(tid) could not take the debug registers: \(error)\n")
            }
        }
    }

    /// The events the debug registers change, before the common handling: a hit; a thread seen for
    /// the first time (created after arming) gets the slots; an exec or exit forgets them. nil: go on
    /// with the common handling.
    func handleHardware(_ event: TraceEvent, onEvent: (HookEvent) -> Void) throws -> Bool? {
        guard let slots = debugSlots else { return nil }
        switch event {
        case .trap(let tid):
            return try hardwareTrap(tid, onEvent: onEvent)
        case .signal(let tid, _), .groupStop(let tid, _), .interrupted(let tid), .other(let tid, _):
            armIfNew(tid)
        case .newThread(_, let child) where session.earlyStops.contains(child):
            armIfNew(child)
        // An early stop is not armed: it may be a fork child's, which graft releases, and whose
        // registers would stay armed after the detach (it would die of SIGTRAP at its first hit).
        // A thread's is armed at its clone event.
        case .exec(let tid) where vforkChildren.contains(tid):
            slots.control[tid] = nil    // a vfork child's exec: the parent's threads keep theirs
            slots.returnSlots[tid] = nil
        case .exec:
            slots.control.removeAll()   // exec clears every thread's debug registers
            slots.returnSlots.removeAll()
        case .threadExited(let tid, _):
            slots.control[tid] = nil
            slots.returnSlots[tid] = nil
        default:
            break
        }
        return nil
    }

    /// A SIGTRAP stop that may be a debug-register hit: handled (true/false: reported) or nil when it
    /// is not one of graft's.
    func hardwareTrap(_ tid: Int32, onEvent: (HookEvent) -> Void) throws -> Bool? {
        guard let slots = debugSlots else { return nil }
        armIfNew(tid)
        let pc = try tracee.programCounter(of: tid)
        if let breakpoint = slots.executeBreakpoint(at: pc, thread: tid) {
            cpuFollower.observe(process: tracee.pid, thread: tid)
            if pcOnlyPath, !draining, let hook = breakpoint.entryHook, pcOnlyHooks[hook], !breakpoint.isReturnSite {
                // Nothing to change: the thread goes on at pc, RF set, running the instruction.
                count(hook)
                if reportsCalls {
                    onEvent(.hit(HookHit(hook: hook, location: specs[hook].location, tid: tid, address: pc,
                                         arguments: [], backtrace: [], wallTime: wallClock())))
                }
                try tracee.resume(tid)
                checkCount()
                return reportsCalls
            }
            var registers = try tracee.registers(of: tid)
            let before = registers
            let reported = try hit(breakpoint, tid: tid, registers: &registers, onEvent: onEvent)
            if registers.differsOnlyInPC(from: before) {
                if registers.rip != before.rip { try tracee.setProgramCounter(registers.rip, of: tid) }
            } else {
                try tracee.setRegisters(registers, of: tid)
            }
            if breakpoint.entryHook == nil {
                try releaseReturnSlotIfDone(breakpoint, thread: tid, owner: returnOwner(breakpoint, tid: tid, registers: registers))
            }
            try tracee.resume(tid)
            checkCount()
            return reported
        }
        if let watch = slots.watch, try tracee.debugRegister(6, of: tid) & (1 << UInt64(watch.slot)) != 0 {
            let reported = try watchHit(watch, tid: tid, pc: pc, onEvent: onEvent)
            try tracee.resume(tid)
            checkCount()
            return reported
        }
        return nil
    }

    /// `--returns` with `--hardware`: the return address in one of the thread's spare slots.
    func ensureHardwareReturnSite(_ address: UInt64, thread tid: Int32, goABI: Bool, onEvent: (HookEvent) -> Void) throws -> Bool {
        guard let slots = debugSlots else { return false }
        if let hook = slots.hooks[address] {
            hook.isReturnSite = true
            return true
        }
        var mine = slots.returnSlots[tid, default: [:]]
        if mine.values.contains(where: { $0.address == address }) { return true }
        guard let free = (slots.shared.count..<DebugSlots.count).first(where: { mine[$0] == nil }) else {
            if slots.toldFull.insert(tid).inserted {
                onEvent(.notice("thread \(tid): a return is not reported: its \(DebugSlots.count - slots.shared.count) spare debug register\(DebugSlots.count - slots.shared.count == 1 ? " holds" : "s hold") return addresses of calls still running"))
            }
            return false
        }
        let code = (try? tracee.readMemory(at: address, count: 16)) ?? []
        guard let instruction = disassembler.decodeOne(code, at: address) else {
            onEvent(.notice("returns to \(hex(address)) are not reported: the instruction there does not decode"))
            return false
        }
        var control = slots.control[tid] ?? DebugControl()
        try tracee.setDebugRegister(free, to: address, of: tid)
        control.enable(free, .execute, length: 1)
        try tracee.setDebugRegister(7, to: control.value, of: tid)
        slots.control[tid] = control
        let breakpoint = Breakpoint(address: address, originalByte: instruction.bytes[0], instruction: instruction,
                                    displaced: .skip(length: 0), slot: nil, entryHook: nil, isReturnSite: true)
        breakpoint.hardwareSlot = free
        breakpoint.goABI = goABI
        mine[free] = breakpoint
        slots.returnSlots[tid] = mine
        return true
    }

    /// A return slot whose calls have all returned is disabled (DR7 of that thread).
    func releaseReturnSlotIfDone(_ breakpoint: Breakpoint, thread tid: Int32, owner: UInt64) throws {
        guard let slots = debugSlots, let slot = breakpoint.hardwareSlot, slot >= slots.shared.count,
              !(pending[owner] ?? []).contains(where: { $0.returnAddress == breakpoint.address }) else { return }
        slots.returnSlots[tid]?[slot] = nil
        if var control = slots.control[tid] {
            control.disable(slot)
            try tracee.setDebugRegister(7, to: control.value, of: tid)
            slots.control[tid] = control
        }
    }

    /// Teardown: whether `tid`'s SIGTRAP (taken, or queued behind the interrupt stop) came from a
    /// debug register of graft's. Such a trap is dropped, never delivered: an execute breakpoint
    /// left rip at its instruction, which runs once the registers are cleared; a write already happened.
    func ownsHardwareTrap(_ tid: Int32) -> Bool {
        guard let slots = debugSlots else { return false }
        if let pc = try? tracee.programCounter(of: tid), slots.executeBreakpoint(at: pc, thread: tid) != nil { return true }
        if let watch = slots.watch, let status = try? tracee.debugRegister(6, of: tid), status & (1 << UInt64(watch.slot)) != 0 {
            return true
        }
        return false
    }

    /// Teardown, every thread stopped: DR7 cleared (then DR0–DR3) on every thread graft armed, and
    /// on every thread it did not (cheap, and nothing of another tool's can be there: graft refused
    /// to arm over it). True when every write took.
    func disarmHardware() -> Bool {
        guard let slots = debugSlots else { return true }
        var ok = true
        for tid in tracee.threadIDs {
            do {
                try tracee.setDebugRegister(7, to: 0, of: tid)
                for slot in 0..<DebugSlots.count { try tracee.setDebugRegister(slot, to: 0, of: tid) }
                try tracee.setDebugRegister(6, to: 0, of: tid)
            } catch GraftError.threadVanished {
                continue
            } catch {
                if slots.control[tid] != nil { ok = false }
            }
        }
        slots.control.removeAll()
        slots.returnSlots.removeAll()
        return ok
    }
}
