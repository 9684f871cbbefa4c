import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// The hit path: a stop at one of graft's int3s, reported and sent on.
extension HookEngine {
    /// An int3 raises SIGTRAP with si_code SI_KERNEL (0x80); kill/tgkill/raise give SI_USER or
    /// SI_TKILL. Asked only where the pc cannot tell (`Breakpoint.pcIsAmbiguous`).
    func trapIsOurs(_ tid: Int32) -> Bool {
        tracee.signalCode(of: tid).map { $0 == 0x80 } ?? true
    }


    /// The pc-only fast path (`pcOnlyHooks`): true when the stop was such a hit, reported (unless
    /// --quiet) and handled; nil when the full path must look (someone else's trap, a return site,
    /// a hook that reads more, an instruction that changes more than the pc).
    func pcOnlyHit(_ tid: Int32, onEvent: (HookEvent) -> Void) throws -> Bool? {
        let pc = try tracee.programCounter(of: tid)
        guard !draining, let breakpoint = breakpoints[pc &- 1], let hook = breakpoint.entryHook, pcOnlyHooks[hook],
              !breakpoint.isReturnSite, let next = breakpoint.resumeAt, !breakpoint.pcIsAmbiguous else { return nil }
        cpuFollower.observe(process: tracee.pid, thread: tid)
        count(hook)
        if reportsCalls {
            onEvent(.hit(HookHit(hook: hook, location: specs[hook].location, tid: tid, address: breakpoint.address,
                                 arguments: [], backtrace: [], wallTime: wallClock())))
        }
        try tracee.setProgramCounter(next, of: tid)
        try tracee.resume(tid)
        checkCount()
        return reportsCalls
    }

    // MARK: - A hit

    /// Reports the call or return at `breakpoint` and runs the displaced instruction on `registers`.
    func hit(_ breakpoint: Breakpoint, tid: Int32, registers: inout Registers, onEvent: (HookEvent) -> Void) throws -> Bool {
        var reported = false
        let owner = returnOwner(breakpoint, tid: tid, registers: registers)
        if breakpoint.isReturnSite, var frames = pending[owner], !frames.isEmpty {
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
                    var event = HookReturn(hook: last.hook, location: spec.location, tid: tid, value: value,
                                           returnedValue: registers.rax, durationNanoseconds: now &- last.start,
                                           wallTime: wallClock())
                    event.call = last.call
                    if let decoder = decoders[last.hook] ?? nil {
                        var returned = registers
                        returned.rax = value  // what the function returned, before --set-return
                        (event.typedValue, event.typedValues) = typedResults(decoder, returned, tid: tid)
                        if !last.outputs.isEmpty { event.outputs = decoder.readOutputs(last.outputs, result: value, read: readForDecoder) }
                    }
                    onEvent(.returned(event))
                    reported = true
                }
            }
            pending[owner] = frames
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
            callSerial &+= 1
            let call = callSerial
            var outputs: [PendingOutput] = []
            // No array at all for the common --args 0 (integerArguments allocates one per call).
            // Go's register ABI: rax, rbx, rcx, rdi, rsi, r8–r11; C's (SysV): rdi, rsi, rdx, rcx, r8, r9;
            // Go's ABI0 (assembly functions): none, every argument on the stack.
            let inRegisters = breakpoint.stackArguments ? 0 : breakpoint.goABI ? 9 : 6
            var arguments = spec.argumentCount == 0 || inRegisters == 0 ? []
                : Array((breakpoint.goABI ? registers.goIntegerArguments : registers.integerArguments).prefix(spec.argumentCount))
            if spec.argumentCount > inRegisters {
                // The rest: on the stack above the return address.
                let bytes = (try? tracee.readMemory(at: registers.rsp &+ 8, count: (spec.argumentCount - inRegisters) * 8)) ?? []
                for i in stride(from: 0, to: bytes.count, by: 8) { arguments.append(readLittleEndianUInt64(bytes, at: i)) }
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
                var event = HookHit(hook: hook, location: spec.location, tid: tid, address: breakpoint.address,
                                    arguments: arguments, backtrace: frames, wallTime: wall)
                event.goABI = breakpoint.goABI
                event.call = call
                if spec.argumentCount > 0 || spec.returns, let decoder = decoder(hook, breakpoint), spec.argumentCount > 0 {
                    event.typedArguments = typedArguments(decoder, limit: spec.argumentCount, registers, tid: tid)
                    if spec.returns, let typed = event.typedArguments { outputs = decoder.pendingOutputs(typed) }
                }
                onEvent(.hit(event))
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
                        var event = HookReturn(hook: hook, location: spec.location, tid: tid, value: registers.rax,
                                               returnedValue: registers.rax, durationNanoseconds: 0, wallTime: wall)
                        event.call = call
                        onEvent(.returned(event))
                    }
                }
                return reported
            }
            if spec.catchesReturn {
                let returnAddress = try tracee.readWord(at: registers.rsp, via: tid)
                if try ensureReturnSite(returnAddress, via: tid, goABI: breakpoint.goABI, onEvent: onEvent) {
                    var frames = pending[owner, default: []]
                    // The same function entered again at the same stack slot with the same return
                    // address while its earlier call is still pending: that call was left without
                    // returning (longjmp, an exception), or its return would have come first. A
                    // tail call differs: another function enters there (both return at once).
                    while let last = frames.last, last.hook == hook, last.entryRSP == registers.rsp, last.returnAddress == returnAddress {
                        frames.removeLast()
                    }
                    frames.append(PendingReturn(hook: hook, entryRSP: registers.rsp, returnAddress: returnAddress, start: graft_monotonic_ns(), call: call, outputs: outputs))
                    pending[owner] = frames
                }
            }
        }
        try execute(breakpoint, tid: tid, registers: &registers)
        return reported
    }

    /// Whose pending calls a stop at `breakpoint` looks at: the thread's; in Go code (a Go function's
    /// entry, or a return site of one) the goroutine's — its `g`, which Go's ABIInternal keeps in r14
    /// in Go code — since a goroutine blocked in a call may resume on another thread and return there.
    func returnOwner(_ breakpoint: Breakpoint, tid: Int32, registers: Registers) -> UInt64 {
        breakpoint.goABI && registers.r14 != 0 ? registers.r14 : HookEngine.threadOwner(tid)
    }

    /// A thread as an owner of pending calls (g pointers are heap addresses, never below 2^32).
    static func threadOwner(_ tid: Int32) -> UInt64 { UInt64(UInt32(bitPattern: tid)) }

    func record(duration: UInt64, hook: Int) {
        stats[hook].returns += 1
        if stats[hook].durations.count < 1_000_000 {
            stats[hook].durations.append(duration)
        } else {
            let slot = Int.random(in: 0..<stats[hook].returns, using: &random)
            if slot < stats[hook].durations.count { stats[hook].durations[slot] = duration }
        }
    }

    /// Runs the instruction the int3 displaced (`X86DisplacedInstruction.execute`, pure): on the
    /// registers, or by sending the thread to its copy.
    func execute(_ breakpoint: Breakpoint, tid: Int32, registers: inout Registers) throws {
        // A debug-register breakpoint displaced nothing: the instruction runs when the thread goes on.
        if breakpoint.hardwareSlot != nil { return }
        try breakpoint.runDisplaced(on: &registers, tid: tid, tracee: tracee)
    }
}
