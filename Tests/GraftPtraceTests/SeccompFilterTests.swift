import GraftPtrace
import Testing

/// The classic-BPF interpreter graft runs a target's seccomp filters with, before a remote system
/// call (Tracee.remoteSyscall). Programs as libseccomp and systemd write them.
@Suite struct SeccompFilterTests {
    // Opcodes (linux/filter.h).
    static let ldAbs: UInt16 = 0x20, ldImm: UInt16 = 0x00, ldMem: UInt16 = 0x60, ldLen: UInt16 = 0x80
    static let ldxImm: UInt16 = 0x01, st: UInt16 = 0x02, tax: UInt16 = 0x07, txa: UInt16 = 0x87
    static let jeq: UInt16 = 0x15, jgt: UInt16 = 0x25, jset: UInt16 = 0x45, ja: UInt16 = 0x05, jeqX: UInt16 = 0x1d
    static let retK: UInt16 = 0x06, retA: UInt16 = 0x16
    static let add: UInt16 = 0x04, mul: UInt16 = 0x24, and: UInt16 = 0x54, lsh: UInt16 = 0x64, rsh: UInt16 = 0x74, divX: UInt16 = 0x3c
    static let allow: UInt32 = 0x7fff_0000, kill: UInt32 = 0x8000_0000, trap: UInt32 = 0x0003_0000, errno: UInt32 = 0x0005_0000

    typealias I = BPFInstruction

    /// The hook_seccomp victim's filter: mmap (9) with PROT_EXEC (4) in args[2] -> `action`.
    static func mmapExec(_ action: UInt32) -> SeccompFilter {
        SeccompFilter([
            I(ldAbs, 0, 0, 4), I(jeq, 0, 4, SeccompFilter.archX86_64),
            I(ldAbs, 0, 0, 0), I(jeq, 0, 2, 9),
            I(ldAbs, 0, 0, 32), I(jset, 1, 0, 4),
            I(retK, 0, 0, allow), I(retK, 0, 0, action),
        ])
    }

    static func mmap(protection: UInt64, arch: UInt32 = SeccompFilter.archX86_64) -> [UInt8] {
        SeccompFilter.data(number: 9, arch: arch, instructionPointer: 0x7f00_0000_1002, arguments: [0x5000_0000, 4096, protection, 0x100022, UInt64.max, 0])
    }

    @Test func theVictimsFilter() {
        let filter = Self.mmapExec(Self.kill)
        #expect(SeccompFilter.verdict(of: [filter], for: Self.mmap(protection: 5)) == .killProcess)
        #expect(SeccompFilter.verdict(of: [filter], for: Self.mmap(protection: 3)) == .allow)
        #expect(SeccompFilter.verdict(of: [filter], for: Self.mmap(protection: 5, arch: 0x4000_0003)) == .allow)
        let munmap = SeccompFilter.data(number: 11, instructionPointer: 0, arguments: [0x5000_0000, 4096])
        #expect(SeccompFilter.verdict(of: [filter], for: munmap) == .allow)
        #expect(SeccompFilter.verdict(of: [Self.mmapExec(Self.trap)], for: Self.mmap(protection: 5)) == .trap)
        #expect(SeccompFilter.verdict(of: [Self.mmapExec(Self.errno | 1)], for: Self.mmap(protection: 5)) == .errno(1))
        #expect(SeccompFilter.verdict(of: [], for: Self.mmap(protection: 5)) == .allow)
    }

    @Test func theMostSevereActionOfAllFiltersWins() {
        let data = Self.mmap(protection: 5)
        let allowAll = SeccompFilter([I(Self.retK, 0, 0, Self.allow)])
        #expect(SeccompFilter.verdict(of: [allowAll, Self.mmapExec(Self.errno | 13), Self.mmapExec(Self.trap)], for: data) == .trap)
        #expect(SeccompFilter.verdict(of: [Self.mmapExec(Self.trap), Self.mmapExec(Self.kill), allowAll], for: data) == .killProcess)
        #expect(SeccompFilter.verdict(of: [allowAll, Self.mmapExec(Self.errno | 13)], for: data) == .errno(13))
        // KILL_THREAD (0) is more severe than TRAP, less than KILL_PROCESS.
        let killThread = SeccompFilter([I(Self.retK, 0, 0, 0)])
        #expect(SeccompFilter.verdict(of: [Self.mmapExec(Self.trap), killThread], for: data) == .killThread)
    }

    @Test func registersScratchMemoryAndArithmetic() {
        // A = nr; M[3] = A; X = 5; A = (A * 2 + 1) << 4 >> 2 & 0xff; A == (nr*2+1)*4 ? ret M[3] + allow : kill
        let program = SeccompFilter([
            I(Self.ldAbs, 0, 0, 0), I(Self.st, 0, 0, 3), I(Self.ldxImm, 0, 0, 5),
            I(Self.mul, 0, 0, 2), I(Self.add, 0, 0, 1), I(Self.lsh, 0, 0, 4), I(Self.rsh, 0, 0, 2), I(Self.and, 0, 0, 0xff),
            I(Self.jeq, 1, 0, (9 * 2 + 1) * 4), I(Self.retK, 0, 0, Self.kill),
            I(Self.ldMem, 0, 0, 3), I(Self.add, 0, 0, Self.errno), I(Self.retA, 0, 0, 0),
        ])
        #expect(program.run(Self.mmap(protection: 0)) == Self.errno | 9)
        // TAX / TXA, a jump on X, BPF_LEN, an unconditional jump.
        let second = SeccompFilter([
            I(Self.ldLen, 0, 0, 0), I(Self.tax, 0, 0, 0), I(Self.ldImm, 0, 0, 64),
            I(Self.jeqX, 0, 2, 0), I(Self.ja, 0, 0, 1), I(Self.retK, 0, 0, Self.kill),
            I(Self.txa, 0, 0, 0), I(Self.jgt, 0, 1, 63), I(Self.retK, 0, 0, Self.allow), I(Self.retK, 0, 0, Self.trap),
        ])
        #expect(second.run(Self.mmap(protection: 0)) == Self.allow)
    }

    @Test func shiftsByXUseTheLowFiveBitsAndErrnoIsClampedAsTheKernelDoes() {
        // A = 1; X = 32; A <<= X: the kernel shifts by 32 & 31 = 0, so A stays 1.
        let shift = SeccompFilter([I(Self.ldImm, 0, 0, 1), I(Self.ldxImm, 0, 0, 32), I(0x6c, 0, 0, 0),
                                   I(Self.jeq, 0, 1, 1), I(Self.retK, 0, 0, Self.allow), I(Self.retK, 0, 0, Self.kill)])
        #expect(SeccompFilter.verdict(of: [shift], for: Self.mmap(protection: 5)) == .allow)
        #expect(SeccompVerdict(returnValue: Self.errno | 0xffff) == .errno(4095))
        #expect(SeccompVerdict(returnValue: Self.errno | 0x1001) == .errno(4095))
        #expect(SeccompVerdict(returnValue: Self.errno | 22) == .errno(22))
        // Equal actions: the first filter run (the newest) gives the errno.
        let data = Self.mmap(protection: 5)
        #expect(SeccompFilter.verdict(of: [Self.mmapExec(Self.errno | 5), Self.mmapExec(Self.errno | 1)], for: data) == .errno(5))
    }

    @Test func aProgramTheKernelWouldNotRunIsTakenAsTheWorst() {
        let data = Self.mmap(protection: 5)
        let outOfData = SeccompFilter([I(Self.ldAbs, 0, 0, 64), I(Self.retK, 0, 0, Self.allow)])
        let unaligned = SeccompFilter([I(Self.ldAbs, 0, 0, 2), I(Self.retK, 0, 0, Self.allow)])
        let noReturn = SeccompFilter([I(Self.ldAbs, 0, 0, 0)])
        let jumpOut = SeccompFilter([I(Self.ja, 0, 0, 7), I(Self.retK, 0, 0, Self.allow)])
        for program in [outOfData, unaligned, noReturn, jumpOut] {
            #expect(program.run(data) == nil)
            #expect(SeccompFilter.verdict(of: [program], for: data) == .killProcess)
        }
        // Division by zero ends the program with 0 (KILL_THREAD), as the kernel's does.
        let divide = SeccompFilter([I(Self.ldxImm, 0, 0, 0), I(Self.ldImm, 0, 0, 7), I(Self.divX, 0, 0, 0), I(Self.retK, 0, 0, Self.allow)])
        #expect(SeccompFilter.verdict(of: [divide], for: data) == .killThread)
    }

    @Test func seccompDataLayout() {
        let data = Self.mmap(protection: 5)
        #expect(data.count == 64)
        #expect(Array(data[0..<4]) == [9, 0, 0, 0])
        #expect(Array(data[4..<8]) == [0x3e, 0, 0, 0xc0])
        #expect(Array(data[8..<16]) == [0x02, 0x10, 0, 0, 0, 0x7f, 0, 0])
        #expect(Array(data[32..<40]) == [5, 0, 0, 0, 0, 0, 0, 0])  // args[2]
    }
}
