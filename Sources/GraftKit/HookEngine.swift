import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// One int3 graft placed. A breakpoint can be a hook's entry, a return site, or both. A class: the
/// hit path looks one up per stop, and a struct holding an `Instruction` (strings, bytes) would be
/// copied, with its retains and releases, every time.
final class Breakpoint {
    let address: UInt64
    /// The byte the int3 replaced.
    let originalByte: UInt8
    let instruction: Instruction
    let displaced: X86DisplacedInstruction
    /// Out-of-line copy, for `.outOfLine`.
    var slot: UInt64?
    var entryHook: Int?
    var isReturnSite: Bool
    /// At a function's first instruction (or the one after its endbr64): the return address is at rsp.
    var atFunctionEntry = false
    /// Where the thread goes on when nothing but its pc has to change (the out-of-line copy, the
    /// end of a nop, a jump's target); nil when the displaced instruction touches other registers
    /// or memory. The counting fast path needs no more than this.
    /// The displaced instruction is one byte and emulated, so a thread that ran it legitimately stands
    /// exactly where an int3 leaves one: a SIGTRAP there proves nothing by the pc alone (see
    /// `HookEngine.trapIsOurs`).
    var pcIsAmbiguous: Bool {
        guard slot == nil, instruction.size == 1 else { return false }
        switch displaced {
        case .skip, .push: return true
        default: return false
        }
    }
    var resumeAt: UInt64? {
        switch displaced {
        case .skip(let length): return address &+ UInt64(length)
        case .jump(let target): return target
        case .outOfLine, .push: return slot
        default: return nil
        }
    }

    init(address: UInt64, originalByte: UInt8, instruction: Instruction, displaced: X86DisplacedInstruction,
         slot: UInt64?, entryHook: Int?, isReturnSite: Bool = false) {
        self.address = address
        self.originalByte = originalByte
        self.instruction = instruction
        self.displaced = displaced
        self.slot = slot
        self.entryHook = entryHook
        self.isReturnSite = isReturnSite
    }
}

/// A call whose return graft waits for.
struct PendingReturn {
    let hook: Int
    /// rsp at the entry: the return address sits there, so after `ret` rsp == entryRSP + 8.
    let entryRSP: UInt64
    let returnAddress: UInt64
    let start: UInt64
}

/// Scratch pages mapped into the target for out-of-line copies, 32 bytes a slot.
struct ScratchSpace {
    static let pageSize: UInt64 = 4096
    static let slotSize: UInt64 = 32
    var pages: [(base: UInt64, used: UInt64)] = []

    func contains(_ address: UInt64) -> Bool {
        pages.contains { address >= $0.base && address < $0.base + Self.pageSize }
    }
}

/// The session's work on the tracer thread.
final class HookEngine {
    let tracee: Tracee
    let specs: [HookSpec]
    let limits: HookLimits
    let journal: Journal
    let stopState: StopState
    let index: SymbolIndex
    let disassembler: Disassembler
    lazy var unwinder = RemoteUnwinder(index: index)

    var breakpoints: [UInt64: Breakpoint] = [:]
    var pending: [Int32: [PendingReturn]] = [:]
    var scratch = ScratchSpace()
    var stats: [HookStatistics] = []
    var armed: [ArmedHook] = []
    var totalHits = 0
    var vforkChildren: Set<Int32> = []
    /// Signals the target received while traced (launch mode: was a Ctrl-C also the target's?).
    var signalsSeen: Set<Int32> = []
    /// Trace mode: the single-stepping half (see Stepper).
    var stepper: Stepper?
    /// Clone/fork children whose first stop came before their parent's event.
    var earlyStops: Set<Int32> = []
    /// Threads the loop left in their stop (the thread that exec'd): teardown must not wait for them.
    var parked: Set<Int32> = []
    var end: HookSessionEnd?
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

    init(tracee: Tracee, specs: [HookSpec], limits: HookLimits, journal: Journal, stopState: StopState) {
        self.tracee = tracee
        self.specs = specs
        self.limits = limits
        self.journal = journal
        self.stopState = stopState
        // Built while every thread is stopped, before arming: the maps cannot change under us.
        self.index = (try? SymbolIndex(pid: tracee.pid)) ?? SymbolIndex(mappings: [])
        self.disassembler = try! Disassembler(.x86_64)
    }

    // MARK: - Run

    func run(flush: () -> Void, onEvent: (HookEvent) -> Void, watcher: Watcher) throws -> HookSummary {
        do {
            try tracee.setOptions([.clone, .fork, .vfork, .exec])
            try arm()
        } catch {
            restoreAll()
            // No thread has run since the attach: nothing can be inside a scratch page yet.
            for page in scratch.pages { try? tracee.remoteMunmap(address: page.base, length: ScratchSpace.pageSize) }
            scratch = ScratchSpace()
            try? tracee.detach()
            throw error
        }
        countsOnly = !reportsCalls && stepper == nil && specs.allSatisfy { !$0.catchesReturn && !$0.skip }
        // --duration and the summary's seconds count from the arming, not from graft's start:
        // attaching and reading symbols are not hooking time.
        started = graft_monotonic_ns()
        watcher.startDuration()
        onEvent(.armed(armed))
        flush()  // a script waiting for the armed line must not wait for the first hit
        var loopError: Error?
        do {
            if let stepper, stepper.traceHook == nil {
                // Default trace mode: the stepped thread (and with --all-stop every other) stays ours.
                let keep = try stepper.startDefault(self)
                if let stepped = stepper.tid { parked.formUnion(keep.subtracting([stepped])) }
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
        if loopError != nil, end == nil, execHappened { end = .targetExec }
        if let loopError, end == nil { throw loopError }
        return HookSummary(hooks: stats, end: end ?? .requested, elapsedNanoseconds: graft_monotonic_ns() - started,
                           codeRestored: restored)
    }

    private func loop(flush: () -> Void, onEvent: (HookEvent) -> Void) throws {
        var unflushed = false
        var lastFlush = graft_monotonic_ns()
        while end == nil {
            if let reason = stopState.requested {
                end = reason
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
                    end = .count
                    break
                }
                mayFlush = false
            }
            var event = try tracee.waitForEvent(block: !mayFlush && !draining)
            if event == nil && draining {
                if unflushed { flush(); unflushed = false }
                usleep(1_000)
                continue
            }
            if event == nil && unflushed {  // nothing ready, or woken by the watcher
                stopState.outputPending = false  // before writing: no wake signal may interrupt a write
                flush()
                unflushed = false
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
    private func handle(_ event: TraceEvent, onEvent: (HookEvent) -> Void) throws -> Bool {
        if let stepper, let reported = try stepper.intercept(event, engine: self, onEvent: onEvent) { return reported }
        switch event {
        case .trap(let tid):
            if countsOnly, let reported = try countOnlyHit(tid) { return reported }
            var registers = try tracee.registers(of: tid)
            let address = registers.rip &- 1
            guard let breakpoint = breakpoints[address], !breakpoint.pcIsAmbiguous || trapIsOurs(tid) else {
                // Not graft's: the target's own int3 or raise(SIGTRAP). Deliver it.
                try tracee.resume(tid, signal: SIGTRAP)
                return false
            }
            registers.rip = address
            if let stepper, vforkChildren.isEmpty || !vforkChildren.contains(tid), stepper.wantsToTrace(breakpoint) {
                try stepper.begin(tid, registers: &registers, breakpoint: breakpoint, engine: self, onEvent: onEvent)
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
            signalsSeen.insert(signal)
            if signal == SIGCONT { tracee.clearGroupStop(tid) }
            try tracee.resume(tid, signal: signal)
        case .groupStop(let tid, _):
            try tracee.listen(tid)
        case .interrupted(let tid):
            tracee.clearGroupStop(tid)
            try tracee.resume(tid)
        case .earlyStop(let tid):
            earlyStops.insert(tid)
        case .newThread(let parent, let child):
            if earlyStops.remove(child) != nil { try tracee.resume(child) }
            try continueThread(parent)
        case .forked(let parent, let child, let isVfork):
            if isVfork {
                if earlyStops.remove(child) != nil { try tracee.resume(child) }
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
            onEvent(.notice("fork child \(child) released without breakpoints"))
            return true
        case .exec(let tid):
            if vforkChildren.contains(tid) {
                vforkChildren.remove(tid)
                tracee.detachThread(tid)
                return false
            }
            // The process image is gone, and the breakpoints with it.
            parked.insert(tid)
            execHappened = true
            breakpoints.removeAll()
            pending.removeAll()
            scratch = ScratchSpace()
            end = .targetExec
            onEvent(.notice("process \(tracee.pid) called exec: its code is new, the hooks are gone"))
            return true
        case .threadExited(let tid, let status):
            pending[tid] = nil
            unwinder.forget(tid)
            if draining, end == nil, pending.values.allSatisfy(\.isEmpty) { end = .count }
            if vforkChildren.remove(tid) != nil { return false }
            if tid == tracee.pid {
                end = .targetExited(status)
            }
        case .other(let tid, _):
            try tracee.resume(tid)
        }
        return false
    }

    /// An int3 raises SIGTRAP with si_code SI_KERNEL (0x80); kill/tgkill/raise give SI_USER or
    /// SI_TKILL. Asked only where the pc cannot tell (`Breakpoint.pcIsAmbiguous`).
    private func trapIsOurs(_ tid: Int32) -> Bool {
        tracee.signalCode(of: tid).map { $0 == 0x80 } ?? true
    }

    /// One call of `hook`: the summary's, `--count`'s and the status line's counters.
    private func count(_ hook: Int) {
        totalHits += 1
        stats[hook].hits += 1
        stopState.hits.add(1, ordering: .relaxed)
    }

    /// `--count` reached: let the counted calls return (and report their returns) before ending; new
    /// calls are no longer counted. At most `drainLimit`.
    private func checkCount() {
        if let count = limits.count, totalHits >= count, end == nil, !draining {
            if pending.values.allSatisfy(\.isEmpty) { end = .count } else {
                draining = true
                drainDeadline = graft_monotonic_ns() &+ Self.drainLimit
            }
        } else if draining, pending.values.allSatisfy(\.isEmpty) {
            end = .count
        }
    }

    /// Every hook only counts (no events, no returns, no --skip) and no thread is stepped: a hit
    /// needs the pc and nothing else — PTRACE_PEEKUSER rip, PTRACE_POKEUSER rip to where the
    /// thread goes on, PTRACE_CONT (~1.1 µs of ptrace, against ~4.2 µs for GETREGS + POKEDATA +
    /// SETREGS). Decided once the hooks are armed.
    var countsOnly = false

    /// The counting fast path: true when the stop was such a hit and is handled, nil when the full
    /// path must look (someone else's trap, a return site, an instruction that changes more than
    /// the pc).
    private func countOnlyHit(_ tid: Int32) throws -> Bool? {
        let pc = try tracee.programCounter(of: tid)
        guard !draining, let breakpoint = breakpoints[pc &- 1], let hook = breakpoint.entryHook, !breakpoint.isReturnSite,
              let next = breakpoint.resumeAt, !breakpoint.pcIsAmbiguous else { return nil }
        cpuFollower.observe(process: tracee.pid, thread: tid)
        count(hook)
        try tracee.setProgramCounter(next, of: tid)
        try tracee.resume(tid)
        checkCount()
        return true
    }

    /// Lets a thread go on after an event stop: the stepped thread by another single step.
    private func continueThread(_ tid: Int32, signal: Int32 = 0) throws {
        if let stepper, stepper.tid == tid, stepper.isStepping {
            try stepper.stepOn(self, signal: signal)
        } else {
            try tracee.resume(tid, signal: signal)
        }
    }

    // MARK: - A hit

    /// Reports the call or return at `breakpoint` and runs the displaced instruction on `registers`.
    private func hit(_ breakpoint: Breakpoint, tid: Int32, registers: inout Registers, onEvent: (HookEvent) -> Void) throws -> Bool {
        var reported = false
        if breakpoint.isReturnSite, var frames = pending[tid], !frames.isEmpty {
            // Frames below the current one were abandoned (longjmp, exceptions): forget them.
            while let last = frames.last, last.entryRSP &+ 8 < registers.rsp { frames.removeLast() }
            // More than one frame returns here at once after a tail call (outer jumped to inner: both
            // were entered with the same stack pointer and return address).
            while let last = frames.last, last.entryRSP &+ 8 == registers.rsp, last.returnAddress == breakpoint.address {
                frames.removeLast()
                let spec = specs[last.hook]
                let value = registers.rax
                if let replacement = spec.setReturn { registers.rax = UInt64(bitPattern: replacement) }
                let now = graft_monotonic_ns()
                record(duration: now &- last.start, hook: last.hook)
                if reportsCalls, spec.returns || spec.setReturn != nil {
                    onEvent(.returned(HookReturn(hook: last.hook, location: spec.location, tid: tid, value: value,
                                                 returnedValue: registers.rax, durationNanoseconds: now &- last.start,
                                                 wallTime: wallClock())))
                    reported = true
                }
            }
            pending[tid] = frames
        }
        if let hook = breakpoint.entryHook, !draining {
            let spec = specs[hook]
            count(hook)
            if !reportsCalls && !spec.skip && !spec.catchesReturn {
                // Counted, not reported (no arguments read, no backtrace unwound): nothing else to do
                // but run the displaced instruction.
                try execute(breakpoint, tid: tid, registers: &registers)
                return true
            }
            let wall = wallClock()
            // No array at all for the common --args 0 (integerArguments allocates one per call).
            var arguments = spec.argumentCount == 0 ? [] : Array(registers.integerArguments.prefix(spec.argumentCount))
            if spec.argumentCount > 6 {
                // The seventh argument onwards: on the stack above the return address.
                let bytes = (try? tracee.readMemory(at: registers.rsp &+ 8, count: (spec.argumentCount - 6) * 8)) ?? []
                for i in stride(from: 0, to: bytes.count, by: 8) {
                    var word: UInt64 = 0
                    for j in 0..<8 { word |= UInt64(bytes[i + j]) << (8 * UInt64(j)) }
                    arguments.append(word)
                }
            }
            var frames: [BacktraceFrame] = []
            if spec.backtrace && reportsCalls {
                // libunwind reads the registers from the thread: rip must be the hooked address, not
                // one past the int3, or the CFA rules of the wrong instruction apply.
                try tracee.setRegisters(registers, of: tid)
                frames = unwinder.backtrace(of: tid)
                // At a function's entry the caller's return address is at rsp. Without .eh_frame (Go)
                // libunwind falls back to the frame-pointer chain, whose first link is the caller's
                // own frame: the direct caller would be missing. Put it in.
                if breakpoint.atFunctionEntry, let returnAddress = try? tracee.readWord(at: registers.rsp, via: tid),
                   frames.count < 2 || frames[1].pc != returnAddress,
                   index.mapping(containing: returnAddress)?.executable == true {
                    frames.insert(unwinder.symbolize(returnAddress, lookupAt: returnAddress &- 1), at: min(1, frames.count))
                }
            }
            if reportsCalls {
                onEvent(.hit(HookHit(hook: hook, location: spec.location, tid: tid, address: breakpoint.address,
                                     arguments: arguments, backtrace: frames, wallTime: wall)))
            }
            reported = true
            if spec.skip {
                // Return at once: rax = value, pop the return address.
                let value = spec.setReturn ?? 0
                let returnAddress = try tracee.readWord(at: registers.rsp, via: tid)
                registers.rax = UInt64(bitPattern: value)
                registers.rip = returnAddress
                registers.rsp &+= 8
                if spec.returns {
                    record(duration: 0, hook: hook)  // the summary counts these returns too (0 ns)
                    if reportsCalls {
                        onEvent(.returned(HookReturn(hook: hook, location: spec.location, tid: tid, value: registers.rax,
                                                     returnedValue: registers.rax, durationNanoseconds: 0, wallTime: wall)))
                    }
                }
                return reported
            }
            if spec.catchesReturn {
                let returnAddress = try tracee.readWord(at: registers.rsp, via: tid)
                if try ensureReturnSite(returnAddress, via: tid, onEvent: onEvent) {
                    var frames = pending[tid, default: []]
                    // The same function entered again at the same stack slot with the same return
                    // address while its earlier call is still pending: that call was left without
                    // returning (longjmp, an exception), or its return would have come first. A
                    // tail call differs: another function enters there (both return at once).
                    while let last = frames.last, last.hook == hook, last.entryRSP == registers.rsp, last.returnAddress == returnAddress {
                        frames.removeLast()
                    }
                    frames.append(PendingReturn(hook: hook, entryRSP: registers.rsp, returnAddress: returnAddress, start: graft_monotonic_ns()))
                    pending[tid] = frames
                }
            }
        }
        try execute(breakpoint, tid: tid, registers: &registers)
        return reported
    }

    private func record(duration: UInt64, hook: Int) {
        stats[hook].returns += 1
        if stats[hook].durations.count < 1_000_000 {
            stats[hook].durations.append(duration)
        } else {
            let slot = Int.random(in: 0..<stats[hook].returns, using: &random)
            if slot < stats[hook].durations.count { stats[hook].durations[slot] = duration }
        }
    }

    /// Runs the instruction the int3 displaced: on the registers, or by sending the thread to its copy.
    func execute(_ breakpoint: Breakpoint, tid: Int32, registers: inout Registers) throws {
        let address = breakpoint.address
        switch breakpoint.displaced {
        case .skip(let length):
            registers.rip = address &+ UInt64(length)
        case .push where breakpoint.slot != nil:
            registers.rip = breakpoint.slot!  // run natively from the copy: no POKEDATA per hit
        case .push(let register, let length):
            let value = registers[encoding: register]
            registers.rsp &-= 8
            try tracee.writeWord(value, at: registers.rsp, via: tid)
            registers.rip = address &+ UInt64(length)
        case .movRbpRsp(let length):
            registers.rbp = registers.rsp
            registers.rip = address &+ UInt64(length)
        case .adjustRsp(let subtract, let immediate, let length):
            let result = X86DisplacedInstruction.adjust(rsp: registers.rsp, immediate: immediate, subtract: subtract, eflags: registers.eflags)
            registers.rsp = result.rsp
            registers.eflags = result.eflags
            registers.rip = address &+ UInt64(length)
        case .jump(let target):
            registers.rip = target
        case .call(let target, let returnAddress):
            registers.rsp &-= 8
            try tracee.writeWord(returnAddress, at: registers.rsp, via: tid)
            registers.rip = target
        case .conditionalJump(let condition, let target, let fallThrough):
            registers.rip = X86DisplacedInstruction.conditionHolds(condition, eflags: registers.eflags) ? target : fallThrough
        case .jumpThroughMemory(let slot):
            registers.rip = try tracee.readWord(at: slot, via: tid)
        case .callThroughMemory(let slot, let returnAddress):
            let target = try tracee.readWord(at: slot, via: tid)
            registers.rsp &-= 8
            try tracee.writeWord(returnAddress, at: registers.rsp, via: tid)
            registers.rip = target
        case .ret(let popBytes):
            registers.rip = try tracee.readWord(at: registers.rsp, via: tid)
            registers.rsp &+= 8 &+ UInt64(popBytes)
        case .outOfLine:
            guard let slot = breakpoint.slot else { throw GraftError.hookRefused(function: hex(address), address: address, reason: "no out-of-line copy") }
            registers.rip = slot
        case .refused(let reason):
            throw GraftError.hookRefused(function: hex(address), address: address, reason: reason)
        }
    }

    // MARK: - Arming

    /// Resolves and checks every hook, then writes the int3s. Nothing is written unless every hook
    /// passes its checks.
    private func arm() throws {
        var plans: [(hook: Int, breakpoint: Breakpoint, function: String)] = []
        let contents = try journal.load(ProcessInstance.current(tracee.pid))
        for (hook, spec) in specs.enumerated() {
            let (breakpoint, function) = try plan(spec, hook: hook, journal: contents)
            if let other = plans.first(where: { $0.breakpoint.address == breakpoint.address }) {
                throw GraftError.usage("\(spec.location) and \(specs[other.hook].location) are the same address (\(hex(breakpoint.address))); hook it once")
            }
            plans.append((hook, breakpoint, function))
        }
        for (hook, breakpoint, function) in plans {
            switch breakpoint.displaced {
            case .outOfLine:
                do {
                    breakpoint.slot = try placeOutOfLine(breakpoint.instruction, via: nil)
                } catch let error as GraftError {
                    if let death = tracee.processDeath() { throw death }
                    if case .hookRefused = error { throw error }
                    throw GraftError.hookRefused(function: function, address: breakpoint.address,
                                                 reason: "'\(breakpoint.instruction.text)' can only run out of line, from a scratch page graft maps in the process: \(error)")
                }
            case .push where stepper == nil:
                // A push could be emulated (rsp -= 8 and a POKEDATA of the register), but run from
                // a copy it costs nothing beyond the pc: per hit one PTRACE_POKEDATA and a whole
                // SETREGS fewer (~2.4 µs of ~16 µs). Emulated when no scratch page can be had (a
                // seccomp filter that would not allow the mmap: Tracee.remoteSyscall asks it first),
                // and while tracing (the stepped thread must not count the copy's jump back).
                breakpoint.slot = try? placeOutOfLine(breakpoint.instruction, via: nil)
            default:
                break
            }
            breakpoints[breakpoint.address] = breakpoint
            stats.append(HookStatistics(location: specs[hook].location, function: function))
            armed.append(ArmedHook(index: hook, location: specs[hook].location, function: function, address: breakpoint.address,
                                   instruction: breakpoint.instruction.text,
                                   strategy: breakpoint.slot != nil ? "out of line" : breakpoint.displaced.strategy))
        }
        for breakpoint in breakpoints.values {
            try tracee.writeMemory(at: breakpoint.address, bytes: [X86_64.int3])
        }
    }

    /// The checks of one hook: a function in an executable file mapping, an instruction boundary
    /// decoded from the function start, memory equal to the file, no graft patch there, and a first
    /// instruction graft can displace.
    private func plan(_ spec: HookSpec, hook: Int, journal contents: JournalContents) throws -> (Breakpoint, String) {
        let resolved = try index.resolve(try Location.parse(spec.location))
        guard let mapping = index.mapping(containing: resolved.address) else {
            throw GraftError.addressNotMapped(address: resolved.address)
        }
        guard mapping.executable, mapping.isFileBacked else {
            throw GraftError.addressNotExecutable(address: resolved.address, mapping: "\(mapping.permissions) \(mapping.path.isEmpty ? "anonymous" : mapping.path)")
        }
        guard let module = resolved.module, let symbol = resolved.symbol, let start = resolved.symbolAddress else {
            throw GraftError.noSymbolAt(address: resolved.address)
        }
        if symbol.kind == .ifunc { throw GraftError.ifuncSymbol(function: "\(module.name)!\(symbol.name)", use: "hooking") }
        let function = resolved.description
        var address = resolved.address
        // Code from the file (memory may hold a breakpoint), up to the hooked instruction + 15.
        let length = Int(max(symbol.size, address - start + 16))
        let elf = try? module.elf()
        let fileCode = elf?.bytes(atVirtualAddress: module.linkAddress(start), count: length)
        let code = try fileCode ?? tracee.readMemory(at: start, count: length)
        let instructions = disassembler.decode(code, at: start)
        // Keep endbr64 in place (an indirect branch must land on it); hook the instruction after.
        if address == start, code.starts(with: X86_64.endbr64) { address += UInt64(X86_64.endbr64.count) }
        guard let instruction = instructions.first(where: { $0.address == address }) else {
            let previous = instructions.last(where: { $0.address < address })?.address ?? start
            let next = instructions.first(where: { $0.address > address })?.address ?? (instructions.last?.end ?? start)
            if address < (instructions.last?.end ?? start) {
                throw GraftError.notInstructionBoundary(address: address, function: function, previous: previous, next: next)
            }
            throw GraftError.undecodableInstruction(address: address, function: function)
        }
        if let patch = contents.patches.first(where: { $0.state != .reverted && $0.range.contains(address) }) {
            throw GraftError.hookRefused(function: function, address: address,
                                         reason: "graft patch \(patch.id) is applied there; hooks and patches do not overlap (run `graft unpatch -p \(tracee.pid) \(patch.id)` first)")
        }
        let memory = try tracee.readMemory(at: address, count: instruction.size)
        guard memory == instruction.bytes else {
            let hint = memory.first == X86_64.int3 ? "an int3 is there: another debugger (or another graft hook session) has a breakpoint on it" : "the code in memory differs from the file"
            throw GraftError.unexpectedBytes(address: address, expected: instruction.bytes, found: memory, hint: hint)
        }
        let displaced = X86DisplacedInstruction.classify(instruction)
        if case .refused(let reason) = displaced {
            throw GraftError.hookRefused(function: function, address: address, reason: reason)
        }
        let breakpoint = Breakpoint(address: address, originalByte: instruction.bytes[0], instruction: instruction,
                                    displaced: displaced, slot: nil, entryHook: hook)
        breakpoint.atFunctionEntry = address == start || (address == start + UInt64(X86_64.endbr64.count) && code.starts(with: X86_64.endbr64))
        return (breakpoint, address == resolved.address ? function : "\(function) (after endbr64)")
    }

    /// Makes sure a return breakpoint sits at `address`; false when graft cannot put one there (the
    /// return is then not reported, and the user told once).
    func ensureReturnSite(_ address: UInt64, via tid: Int32, onEvent: (HookEvent) -> Void) throws -> Bool {
        if let existing = breakpoints[address] {
            existing.isReturnSite = true
            return true
        }
        if refusedReturnSites.contains(address) { return false }
        func refuse(_ why: String) -> Bool {
            refusedReturnSites.insert(address)
            onEvent(.notice("returns to \(hex(address)) are not reported: \(why)"))
            return false
        }
        guard let mapping = index.mapping(containing: address), mapping.executable else {
            return refuse("not in an executable mapping")
        }
        var code = (try? tracee.readMemory(at: address, count: 16)) ?? []
        guard !code.isEmpty else { return refuse("unreadable") }
        // Another breakpoint of ours in these bytes: decode the original byte.
        for (offset, byte) in code.enumerated() where byte == X86_64.int3 {
            if let other = breakpoints[address + UInt64(offset)] { code[offset] = other.originalByte }
        }
        guard let instruction = disassembler.decodeOne(code, at: address) else { return refuse("the instruction there does not decode") }
        if code[0] == X86_64.int3 { return refuse("an int3 that is not graft's is there") }
        let displaced = X86DisplacedInstruction.classify(instruction)
        if case .refused(let reason) = displaced { return refuse(reason) }
        let breakpoint = Breakpoint(address: address, originalByte: code[0], instruction: instruction, displaced: displaced,
                                    slot: nil, entryHook: nil, isReturnSite: true)
        if case .outOfLine = displaced {
            do {
                breakpoint.slot = try placeOutOfLine(instruction, via: tid)
            } catch {
                return refuse("no scratch page for an out-of-line copy (\(error))")
            }
        }
        breakpoints[address] = breakpoint
        try tracee.writeMemory(at: address, bytes: [X86_64.int3])
        return true
    }

    /// Writes an out-of-line copy of `instruction` into a scratch slot and returns the slot address.
    private func placeOutOfLine(_ instruction: Instruction, via tid: Int32?) throws -> UInt64 {
        for i in scratch.pages.indices where scratch.pages[i].used + ScratchSpace.slotSize <= ScratchSpace.pageSize {
            let slot = scratch.pages[i].base + scratch.pages[i].used
            if let copy = X86DisplacedInstruction.outOfLineCopy(of: instruction, at: slot) {
                try tracee.writeMemory(at: slot, bytes: copy)
                scratch.pages[i].used += ScratchSpace.slotSize
                return slot
            }
        }
        let base = try mapScratchPage(near: instruction.address, via: tid)
        scratch.pages.append((base, 0))
        guard let copy = X86DisplacedInstruction.outOfLineCopy(of: instruction, at: base) else {
            throw GraftError.hookRefused(function: hex(instruction.address), address: instruction.address,
                                         reason: "'\(instruction.text)' reads memory relative to rip and no scratch page could be mapped within ±2 GiB of it")
        }
        try tracee.writeMemory(at: base, bytes: copy)
        scratch.pages[scratch.pages.count - 1].used = ScratchSpace.slotSize
        return base
    }

    /// A new r-x anonymous page within ±2 GiB of `address` (so rip-relative copies reach their
    /// data), mapped by a remote mmap with MAP_FIXED_NOREPLACE at candidate addresses below the
    /// module, then above it.
    private func mapScratchPage(near address: UInt64, via tid: Int32?) throws -> UInt64 {
        let protection: Int32 = 0x1 | 0x4          // PROT_READ | PROT_EXEC
        let flags: Int32 = 0x02 | 0x20 | 0x100000  // MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
        let module = index.module(containing: address)
        let low = module?.mappings.first?.start ?? (address & ~0xfff)
        let high = module?.mappings.last?.end ?? ((address + 0x1000) & ~0xfff)
        var candidates: [UInt64] = []
        for step in 1...64 {
            let distance = UInt64(step) * 0x10_0000  // 1 MiB steps
            if low > distance { candidates.append(low - distance) }
            candidates.append(high + distance - 0x1000 * 0)
        }
        let thread = try tid ?? tracee.threadForRemoteCall()
        for candidate in candidates {
            let mapped: UInt64
            do {
                mapped = try tracee.remoteSyscall(9, [candidate, ScratchSpace.pageSize, UInt64(protection), UInt64(UInt32(bitPattern: flags)), UInt64.max, 0], name: "mmap", on: thread)
            } catch GraftError.remoteSyscallFailed(_, let code) where code == EEXIST {
                continue  // something is mapped there: the next candidate
            }
            if mapped == candidate { return mapped }
            // A kernel without MAP_FIXED_NOREPLACE (before 4.17) took the address as a hint.
            try? tracee.remoteMunmap(address: mapped, length: ScratchSpace.pageSize)
        }
        throw GraftError.hookRefused(function: hex(address), address: address, reason: "no free page within ±64 MiB for graft's out-of-line copies")
    }

    // MARK: - Fork children

    /// A fork child inherits the int3 bytes; it would die of SIGTRAP at its first call. Put the
    /// original bytes back in its copy of the memory and let it go untraced.
    private func releaseForkChild(_ child: Int32) {
        if earlyStops.remove(child) == nil { _ = try? tracee.waitForFirstStop(of: child) }
        for breakpoint in breakpoints.values {
            try? tracee.writeText(process: child, at: breakpoint.address, bytes: [breakpoint.originalByte])
        }
        tracee.detachThread(child)
    }

    // MARK: - Teardown

    /// Stops every thread, removes every breakpoint, moves threads out of scratch pages, verifies the
    /// code and detaches. Never throws: every step is attempted. True when the code was verified.
    private func teardown(onEvent: (HookEvent) -> Void) -> Bool {
        if case .targetExited = end {
            try? tracee.detach()
            return true
        }
        stopEveryThread(onEvent: onEvent)
        stepper?.finish()
        // A signal can still be queued behind the interrupt stop (a terminal's Ctrl-C reaching the
        // whole process group): note it, so launch mode does not send it a second time.
        for tid in tracee.threadIDs {
            for signal in [SIGINT, SIGQUIT] where hasPendingSignal(tid, signal) { signalsSeen.insert(signal) }
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
        let restored = restoreAll()
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
    private func stopEveryThread(onEvent: (HookEvent) -> Void) {
        var waiting = Set(tracee.threadIDs).subtracting(parked)
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
            case .trap(let tid) where stepper?.absorbFinalTrap(tid, engine: self) == true:
                waiting.remove(tid)
            case .trap(let tid):
                if var registers = try? tracee.registers(of: tid), breakpoints[registers.rip &- 1] != nil {
                    registers.rip &-= 1
                    try? tracee.setRegisters(registers, of: tid)
                } else {
                    tracee.hold(signal: SIGTRAP, for: tid)
                }
                waiting.remove(tid)
            case .signal(let tid, let signal):
                signalsSeen.insert(signal)
                tracee.hold(signal: signal, for: tid)
                waiting.remove(tid)
            case .groupStop(let tid, _), .interrupted(let tid), .other(let tid, _):
                waiting.remove(tid)
            case .earlyStop(let tid):
                earlyStops.insert(tid)
            case .newThread(let parent, let child):
                waiting.remove(parent)
                // The child's first stop is still to come, unless it came early.
                if earlyStops.remove(child) == nil { waiting.insert(child) }
            case .forked(let parent, let child, let isVfork):
                if isVfork {
                    vforkChildren.insert(child)
                    tracee.track(child)
                    if earlyStops.remove(child) == nil { waiting.insert(child) }
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
                    scratch = ScratchSpace()
                    waiting = waiting.filter { tracee.isTraced($0) }
                    waiting.remove(tid)
                }
            case .threadExited(let tid, let status):
                waiting.remove(tid)
                vforkChildren.remove(tid)
                if tid == tracee.pid, end == nil || end == .requested { end = .targetExited(status) }
            }
        }
    }

    private func hasPendingSignal(_ tid: Int32, _ signal: Int32) -> Bool {
        guard let status = ProcFS.readFile("/proc/\(tracee.pid)/task/\(tid)/status") else { return false }
        for line in status.split(separator: "\n") where line.hasPrefix("SigPnd:") || line.hasPrefix("ShdPnd:") {
            let hexText = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).last.map(String.init) ?? ""
            if let mask = UInt64(hexText, radix: 16), mask & (1 << UInt64(signal - 1)) != 0 { return true }
        }
        return false
    }

    /// Resumes `tid` just long enough to take its queued SIGTRAP as a stop (it is delivered before
    /// the thread runs a single instruction) and swallows it.
    private func consumePendingTrap(_ tid: Int32) {
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

    /// Puts every original byte back (reading back each one); true when memory matches.
    @discardableResult
    private func restoreAll() -> Bool {
        var ok = true
        for breakpoint in breakpoints.values {
            do {
                try tracee.writeMemory(at: breakpoint.address, bytes: [breakpoint.originalByte])
                let back = try tracee.readMemory(at: breakpoint.address, count: breakpoint.instruction.size)
                if back != breakpoint.instruction.bytes { ok = false }
            } catch {
                ok = false
            }
        }
        breakpoints.removeAll()
        return ok
    }

    /// Unmaps the scratch pages unless a thread's stack still holds an address inside them (a
    /// signal frame or call made from an out-of-line copy would return there): then they stay.
    private func unmapScratchIfUnreferenced(onEvent: (HookEvent) -> Void) {
        guard !scratch.pages.isEmpty else { return }
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
        for page in scratch.pages {
            try? tracee.remoteMunmap(address: page.base, length: ScratchSpace.pageSize)
        }
        scratch = ScratchSpace()
    }
}

/// Keeps the tracer thread on the CPU where the hooked thread last ran.
///
/// A ptrace stop wakes the tracer, and PTRACE_CONT wakes the tracee: when the two sit on different
/// CPUs each hit pays two cross-CPU wake-ups (an IPI to an idle vCPU costs ~25–30 µs on these VMs,
/// design.md §4), when they share one both wake-ups are local and cheap. graft only moves its own
/// thread (sched_setaffinity on the tracer): the target's scheduling is untouched. The hooked thread's
/// CPU is read from /proc/PID/task/TID/stat (field 39) at most every 2 ms (GRAFT_CPU_FOLLOW_MS; 20 ms followed a migration 13% slower in the 1-thread unpinned hook benchmark). GRAFT_NO_CPU_FOLLOW=1
/// turns it off (benchmarks compare both).
struct CPUFollower {
    private var lastCheck: UInt64 = 0
    private var lastIdleCheck: UInt64 = 0
    private var pinned: Int32 = -1
    private let enabled = getenv("GRAFT_NO_CPU_FOLLOW") == nil
    private var idle = false
    private var observations: UInt = 0
    private var lastThread: Int32 = 0
    /// More than one thread hit since the last SCHED_IDLE decision.
    private var severalThreads = false
    /// The followed thread may run on more than one CPU (rechecked every 100 ms).
    private var movable = true

    mutating func observe(process pid: Int32, thread tid: Int32) {
        guard enabled else { return }
        if tid != lastThread {
            if lastThread != 0 {
                severalThreads = true
                // At once, not at the next decision: a starved tracer may not see one for seconds.
                if idle, graft_set_idle_policy(0) == 0 { idle = false }
            }
            lastThread = tid
        }
        // The clock itself is looked at every 8th hit: at tens of thousands of hits a second that
        // is still far more often than the 2 ms period.
        observations &+= 1
        guard observations & 7 == 0 else { return }
        let now = graft_monotonic_ns()
        guard now &- lastCheck > period else { return }
        lastCheck = now
        // SCHED_IDLE makes the tracer's CPU count as idle when the hooked thread wakes up, so the
        // scheduler puts it back on this CPU instead of waking the other (idle, halted) vCPU; the
        // tracer is preempted at once and runs again when the thread stops. Only while the machine
        // has spare CPUs: under load a SCHED_IDLE tracer would starve and stall the target.
        // /proc/loadavg's running count flickers from one read to the next: decide at most every
        // 100 ms (at the 2 ms lookup period the policy flipped ~80 times a second).
        if now &- lastIdleCheck > 100_000_000 {
            lastIdleCheck = now
            // Only a thread the scheduler may place on several CPUs can be drawn to this one; for a
            // thread pinned to one CPU (taskset) SCHED_IDLE would only let every other task on that
            // CPU preempt graft — and attract them there, since it counts as idle.
            movable = graft_affinity_count(tid) > 1
            // Only while ONE thread hits: with several, most of them sit in their ptrace stop
            // waiting for graft, so /proc/loadavg looks idle, yet once resumed they run — and an
            // idle-class tracer among running threads gets almost no CPU (seconds-long stalls were
            // seen with 8 hot threads on 2 CPUs).
            let spare = movable && !severalThreads && hasSpareCPU()
            severalThreads = false
            if spare != idle, graft_set_idle_policy(spare ? 1 : 0) == 0 { idle = spare }
        }
        guard movable, let cpu = Self.lastCPU(pid, tid), cpu != pinned else { return }
        if graft_pin_current_thread(cpu) == 0 { pinned = cpu }
    }

    static let cpuCount = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    /// How often the followed thread's CPU is looked up (a /proc read, a few µs). Read once per
    /// engine: a static would cost a swift_once check on every hit.
    private let period: UInt64 = UInt64(getenv("GRAFT_CPU_FOLLOW_MS").flatMap { Int(String(cString: $0)) } ?? 2) * 1_000_000
    private let cpus = CPUFollower.cpuCount

    /// /proc/loadavg's runnable count (the 4th field, "running/total") at most the CPU count.
    func hasSpareCPU() -> Bool {
        let running = graft_runnable_tasks()
        return running >= 0 && Int(running) <= cpus
    }

    static func lastCPU(_ pid: Int32, _ tid: Int32) -> Int32? {
        let cpu = graft_thread_last_cpu(pid, tid)
        return cpu >= 0 ? cpu : nil
    }
}

let debugEvents = getenv("GRAFT_DEBUG_EVENTS") != nil
func writeDebug(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress!, $0.count) }
}

func wallClock() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
