import CGraftShim
import GraftCore
import Glibc

/// Memory of a traced process: bulk reads through /proc/PID/mem, code written with PTRACE_POKETEXT
/// (process_vm_writev cannot write read-only text), compare-and-write in one pass.
extension Tracee {
    /// Reads target memory in bulk through /proc/PID/mem (works for any mapping, even --x or PROT_NONE).
    public func readMemory(at address: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        return try tracer.run {
            try ProcessMemory.readFully(memFD, pid: pid, at: address, count: count, gone: { exitError() })
        }
    }

    /// Writes code with PTRACE_POKETEXT, one word at a time (read-modify-write at the edges).
    /// process_vm_writev cannot write read-only text (EFAULT): POKETEXT goes through the kernel's
    /// forced write path, like a debugger's breakpoint.
    public func writeText(at address: UInt64, bytes: [UInt8]) throws {
        guard !bytes.isEmpty else { return }
        let tid = try anyThread()
        try tracer.run {
            let words = try TextWords(peeking: tid, at: address, count: bytes.count, tracee: self)
            let updated = words.merging(bytes)
            for i in updated.indices where updated[i] != words.values[i] {
                if graft_ptrace(GRAFT_PTRACE_POKETEXT, tid, words.address(of: i), updated[i]) != 0 {
                    throw errno == ESRCH ? exitError() : GraftError.systemCall(name: "PTRACE_POKETEXT", errno: errno, context: "\(hex(words.address(of: i))) in process \(pid)")
                }
            }
        }
    }

    /// Writes `new` at `address` only if memory holds `expected` there (same length), in one pass of
    /// PTRACE_PEEKTEXT / POKETEXT over the words it covers, like a minimal C tool: peek every word,
    /// compare, poke the changed words, peek them back. Returns nil once written and read back, or
    /// the bytes found when they are not `expected` (then nothing is written). A write that fails or
    /// does not read back is undone and reported.
    public func replaceText(at address: UInt64, expected: [UInt8], new: [UInt8]) throws -> [UInt8]? {
        precondition(expected.count == new.count, "replaceText: expected and new differ in length")
        guard !new.isEmpty else { return nil }
        let tid = try anyThread()
        return try tracer.run {
            let words = try TextWords(peeking: tid, at: address, count: new.count, tracee: self)
            let found = words.bytes
            if found != expected { return found }
            let updated = words.merging(new)
            var written: [Int] = []
            // Never leave half a patch: put back the words already written.
            func putBack() { for j in written { _ = graft_ptrace(GRAFT_PTRACE_POKETEXT, tid, words.address(of: j), words.values[j]) } }
            for i in updated.indices where updated[i] != words.values[i] {
                if graft_ptrace(GRAFT_PTRACE_POKETEXT, tid, words.address(of: i), updated[i]) != 0 {
                    let code = errno
                    putBack()
                    throw code == ESRCH ? exitError() : GraftError.systemCall(name: "PTRACE_POKETEXT", errno: code, context: "\(hex(words.address(of: i))) in process \(pid)")
                }
                written.append(i)
            }
            for i in written {
                var back: UInt64 = 0
                if graft_peektext(tid, words.address(of: i), &back) != 0 {
                    throw errno == ESRCH ? exitError() : GraftError.addressNotMapped(address: words.address(of: i))
                }
                if back != updated[i] {
                    putBack()
                    throw GraftError.unexpectedBytes(address: words.address(of: i), expected: TextWords.bytes(of: updated[i]),
                                                     found: TextWords.bytes(of: back), hint: "the write did not take; the original bytes were put back")
                }
            }
            return nil
        }
    }
}

/// The 8-byte words covering `count` bytes at an address, as PTRACE_PEEKTEXT read them: the unit
/// POKETEXT writes in (read-modify-write at the edges).
struct TextWords {
    let first: UInt64
    let offset: Int
    let count: Int
    var values: [UInt64]

    /// The words covering `count` bytes at `address`, all zero until read.
    init(at address: UInt64, count: Int) {
        first = address & ~7
        offset = Int(address - first)
        self.count = count
        values = [UInt64](repeating: 0, count: Int(((address + UInt64(count) + 7) & ~7) - first) / 8)
    }

    init(peeking tid: Int32, at address: UInt64, count: Int, tracee: Tracee) throws {
        self.init(at: address, count: count)
        for i in values.indices {
            if graft_peektext(tid, first + UInt64(i * 8), &values[i]) != 0 {
                throw errno == ESRCH ? tracee.exitError() : GraftError.addressNotMapped(address: first + UInt64(i * 8))
            }
        }
    }

    func address(of word: Int) -> UInt64 { first + UInt64(word * 8) }

    /// The `count` bytes as they are in memory.
    var bytes: [UInt8] {
        (0..<count).map { i in UInt8(truncatingIfNeeded: values[(offset + i) / 8] >> UInt64(((offset + i) % 8) * 8)) }
    }

    /// The words with `bytes` (exactly `count` of them) written over theirs.
    func merging(_ bytes: [UInt8]) -> [UInt64] {
        var updated = values
        for (i, byte) in bytes.enumerated() {
            let position = offset + i, shift = UInt64((position % 8) * 8)
            updated[position / 8] = (updated[position / 8] & ~(0xff << shift)) | (UInt64(byte) << shift)
        }
        return updated
    }

    static func bytes(of word: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: word >> UInt64($0 * 8)) } }
}
