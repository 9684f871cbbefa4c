import GraftCore
import GraftELF
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
            let rsp = try tracee.registers(of: tid).rsp & ~7
            guard let stack = mappings.first(where: { $0.contains(rsp) }) else { continue }
            let length = Int(min(stack.end - rsp, 1 << 20))
            let words = try tracee.readMemory(at: rsp, count: length)
            var offset = 0
            while offset + 8 <= words.count {
                var value: UInt64 = 0
                for i in 0..<8 { value |= UInt64(words[offset + i]) << (8 * UInt64(i)) }
                if returnAddresses.contains(value) {
                    throw GraftError.returnAddressInsidePatch(tid: tid, returnAddress: value)
                }
                offset += 8
            }
        }
    }

    /// Writes `new` over `old` at `address`: verifies `old` is there, writes, reads back — one pass
    /// of PEEKTEXT/POKETEXT (`Tracee.replaceText`), nothing else inside the stop window.
    static func replace(at address: UInt64, old: [UInt8], new: [UInt8], tracee: Tracee) throws {
        if let found = try tracee.replaceText(at: address, expected: old, new: new) {
            throw GraftError.unexpectedBytes(address: address, expected: old, found: found, hint: "the code changed while graft was working; nothing was written")
        }
    }
}
