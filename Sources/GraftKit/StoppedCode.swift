import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace

/// The checks and writes made while every thread is stopped.
enum StoppedCode {
    /// Makes sure no thread's pc is strictly inside `range`: a thread there is single-stepped out
    /// (ORBIT's approach), unless it sits in a system call or on a `syscall` instruction, which a step
    /// could block on. A pc at the first byte is fine: the new instruction starts there.
    static func moveThreadsOut(of range: Range<UInt64>, tracee: Tracee) throws -> [Int32] {
        var stepped: [Int32] = []
        func inside(_ address: UInt64) -> Bool { address > range.lowerBound && address < range.upperBound }
        try tracee.forEachThreadID { tid in
            // rip alone first (PTRACE_PEEKUSER): nearly every thread is far from the bytes.
            let stoppedAt = try tracee.programCounter(of: tid)
            guard inside(stoppedAt) || inside(stoppedAt &- 2) else { return }
            let registers = try tracee.registers(of: tid)
            var pc = registers.rip
            // A thread stopped inside a restartable system call resumes at rip - 2.
            let inSyscall = Int64(bitPattern: registers.origRax) >= 0
            guard inside(pc) || (inSyscall && inside(pc &- 2)) else { return }
            if inSyscall { throw GraftError.threadInsidePatch(tid: tid, pc: pc) }
            var steps = 0
            while pc > range.lowerBound && pc < range.upperBound {
                let next = try tracee.readMemory(at: pc, count: 2)
                if next == [0x0f, 0x05] || steps >= 32 { throw GraftError.threadInsidePatch(tid: tid, pc: pc) }
                pc = try tracee.singleStep(tid)
                steps += 1
            }
            stepped.append(tid)
        }
        return stepped.sorted()
    }

    /// Refuses when a thread's stack holds one of `returnAddresses` (scanning from rsp to the end of
    /// its stack mapping, at most 1 MiB: conservative, a stale copy also refuses).
    static func checkReturnAddresses(_ returnAddresses: [UInt64], tracee: Tracee) throws {
        guard !returnAddresses.isEmpty else { return }
        let mappings = try ProcMaps.read(pid: tracee.pid)
        for tid in tracee.threadIDs {
            let rsp = try tracee.registers(of: tid).rsp
            if let found = try stackWord(of: tid, rsp: rsp, mappings: mappings, tracee: tracee, where: returnAddresses.contains) {
                throw GraftError.returnAddressInsidePatch(tid: tid, returnAddress: found.value)
            }
        }
    }

    /// The first word of `tid`'s stack, from rsp up to the end of its stack mapping (at most 1 MiB),
    /// that `matches`, and where it is; nil when none does or rsp is in no mapping.
    static func stackWord(of tid: Int32, rsp: UInt64, mappings: [Mapping], tracee: Tracee,
                          where matches: (UInt64) -> Bool) throws -> (value: UInt64, at: UInt64)? {
        let top = rsp & ~7
        guard let stack = mappings.first(where: { $0.contains(top) }) else { return nil }
        let words = try tracee.readMemory(at: top, count: Int(min(stack.end - top, 1 << 20)))
        var offset = 0
        while offset + 8 <= words.count {
            let value = readLittleEndianUInt64(words, at: offset)
            if matches(value) { return (value, top + UInt64(offset)) }
            offset += 8
        }
        return nil
    }

    /// Writes `new` over `old` at `address`: verifies `old` is there, writes, reads back — one pass
    /// of PEEKTEXT/POKETEXT (`Tracee.replaceText`), nothing else inside the stop window.
    static func replace(at address: UInt64, old: [UInt8], new: [UInt8], tracee: Tracee) throws {
        if let found = try tracee.replaceText(at: address, expected: old, new: new) {
            throw GraftError.unexpectedBytes(address: address, expected: old, found: found, hint: "the code changed while graft was working; nothing was written")
        }
    }
}
