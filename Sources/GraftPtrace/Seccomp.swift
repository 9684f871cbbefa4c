import CGraftShim
import Glibc
import GraftCore

/// What a thread's seccomp filters would do with one system call, decided before graft makes that
/// call inside the target (a remote mmap for a scratch page): a filter that answers SIGSYS or kills
/// for it would hurt the very process graft must leave running. The filters are read with
/// PTRACE_SECCOMP_GET_FILTER (root) and run here over the call's `seccomp_data`, as the kernel runs
/// them: every filter of the thread, the most severe action wins.
public enum SeccompVerdict: Equatable, Sendable, CustomStringConvertible {
    case allow
    case log
    /// The call fails with this errno and has no effect.
    case errno(Int32)
    /// SECCOMP_RET_TRACE: with no PTRACE_O_TRACESECCOMP the kernel skips the call (ENOSYS).
    case trace
    /// A supervisor process is asked: the call blocks until it answers.
    case userNotify
    /// SIGSYS.
    case trap
    case killThread
    case killProcess

    public var description: String {
        switch self {
        case .allow: return "allow it"
        case .log: return "log and allow it"
        case .errno(let code): return "fail it with \(Errno.describe(code))"
        case .trace: return "skip it (SECCOMP_RET_TRACE)"
        case .userNotify: return "hand it to a supervisor process (SECCOMP_RET_USER_NOTIF)"
        case .trap: return "answer it with SIGSYS (SECCOMP_RET_TRAP)"
        case .killThread: return "kill the thread (SECCOMP_RET_KILL_THREAD)"
        case .killProcess: return "kill the process (SECCOMP_RET_KILL_PROCESS)"
        }
    }

    /// The verdict of a filter's 32-bit return value.
    public init(returnValue: UInt32) {
        switch returnValue & 0xffff_0000 {
        case 0x7fff_0000: self = .allow
        case 0x7ffc_0000: self = .log
        case 0x7ff0_0000: self = .trace
        case 0x7fc0_0000: self = .userNotify
        case 0x0005_0000: self = .errno(Int32(min(returnValue & 0xffff, 4095)))  // as the kernel clamps it
        case 0x0003_0000: self = .trap
        case 0x0000_0000: self = .killThread
        case 0x8000_0000: self = .killProcess
        default: self = .killProcess  // unknown actions: the kernel treats them as KILL_PROCESS
        }
    }
}

/// One classic-BPF instruction (struct sock_filter).
public struct BPFInstruction: Equatable, Sendable {
    public var code: UInt16, jt: UInt8, jf: UInt8, k: UInt32
    public init(_ code: UInt16, _ jt: UInt8, _ jf: UInt8, _ k: UInt32) {
        self.code = code; self.jt = jt; self.jf = jf; self.k = k
    }
}

/// A seccomp filter: a classic-BPF program over `struct seccomp_data` (nr, arch, instruction
/// pointer, six arguments: 64 bytes), run the way the kernel's interpreter runs the instructions
/// seccomp accepts (seccomp_check_filter): loads from the data, the accumulator and index
/// registers, 16 scratch words, ALU, jumps, return.
public struct SeccompFilter: Equatable, Sendable {
    public let instructions: [BPFInstruction]
    public init(_ instructions: [BPFInstruction]) { self.instructions = instructions }

    /// AUDIT_ARCH_X86_64.
    public static let archX86_64: UInt32 = 0xc000_003e

    /// `struct seccomp_data` for a call, little-endian.
    public static func data(number: Int, arch: UInt32 = archX86_64, instructionPointer: UInt64, arguments: [UInt64]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        func put(_ value: UInt64, _ size: Int) { for i in 0..<size { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(8 * i))) } }
        put(UInt64(UInt32(truncatingIfNeeded: number)), 4)
        put(UInt64(arch), 4)
        put(instructionPointer, 8)
        for i in 0..<6 { put(i < arguments.count ? arguments[i] : 0, 8) }
        return bytes
    }

    /// The filter's return value for `data`, or nil for a program the kernel would not have run
    /// (a bad load, a jump out of the program, no return): the caller must assume the worst.
    public func run(_ data: [UInt8]) -> UInt32? {
        var a: UInt32 = 0, x: UInt32 = 0
        var memory = [UInt32](repeating: 0, count: 16)
        var pc = 0
        func load(_ offset: UInt32) -> UInt32? {
            let o = Int(offset)
            guard offset % 4 == 0, o + 4 <= data.count else { return nil }
            return UInt32(data[o]) | UInt32(data[o + 1]) << 8 | UInt32(data[o + 2]) << 16 | UInt32(data[o + 3]) << 24
        }
        var steps = 0
        while pc < instructions.count, steps <= instructions.count {
            steps += 1  // classic BPF only jumps forward: one pass at most
            let insn = instructions[pc]
            let k = insn.k
            pc += 1
            switch insn.code & 0x07 {
            case 0x00, 0x01:  // BPF_LD, BPF_LDX
                let isX = insn.code & 0x07 == 0x01
                var value: UInt32
                switch insn.code & 0xe0 {  // mode
                case 0x00: value = k                                      // BPF_IMM
                case 0x20: guard !isX, insn.code & 0x18 == 0x00, let v = load(k) else { return nil }; value = v  // BPF_ABS, BPF_W
                case 0x60: guard k < 16 else { return nil }; value = memory[Int(k)]  // BPF_MEM
                case 0x80: value = UInt32(data.count)                      // BPF_LEN
                default: return nil
                }
                if isX { x = value } else { a = value }
            case 0x02: guard k < 16 else { return nil }; memory[Int(k)] = a  // BPF_ST
            case 0x03: guard k < 16 else { return nil }; memory[Int(k)] = x  // BPF_STX
            case 0x04:  // BPF_ALU
                let operand = insn.code & 0x08 != 0 ? x : k
                switch insn.code & 0xf0 {
                case 0x00: a = a &+ operand
                case 0x10: a = a &- operand
                case 0x20: a = a &* operand
                case 0x30: guard operand != 0 else { return 0 }; a = a / operand  // the kernel returns 0 (kill)
                case 0x40: a = a | operand
                case 0x50: a = a & operand
                // The kernel shifts by the low 5 bits (constant shifts >= 32 are refused at load).
                case 0x60: a = a << (operand & 31)
                case 0x70: a = a >> (operand & 31)
                case 0x80: a = 0 &- a
                case 0x90: guard operand != 0 else { return 0 }; a = a % operand
                case 0xa0: a = a ^ operand
                default: return nil
                }
            case 0x05:  // BPF_JMP
                let operand = insn.code & 0x08 != 0 ? x : k
                let taken: Bool
                switch insn.code & 0xf0 {
                case 0x00: pc += Int(k); continue  // BPF_JA
                case 0x10: taken = a == operand
                case 0x20: taken = a > operand
                case 0x30: taken = a >= operand
                case 0x40: taken = a & operand != 0
                default: return nil
                }
                pc += Int(taken ? insn.jt : insn.jf)
            case 0x06:  // BPF_RET
                switch insn.code & 0x18 {
                case 0x00: return k       // BPF_K
                case 0x10: return a       // BPF_A
                default: return nil
                }
            case 0x07:  // BPF_MISC
                switch insn.code & 0xf8 {
                case 0x00: x = a          // BPF_TAX
                case 0x80: a = x          // BPF_TXA
                default: return nil
                }
            default:
                return nil
            }
        }
        return nil
    }

    /// The verdict of several filters, newest first (the order the kernel runs them): the most
    /// severe action wins (the smallest action value taken as signed: KILL_PROCESS < KILL_THREAD <
    /// TRAP < …), and among equal actions the first one's value (its errno).
    public static func verdict<Filters: Sequence<SeccompFilter>>(of filters: Filters, for data: [UInt8]) -> SeccompVerdict {
        var worst: UInt32 = 0x7fff_0000
        for filter in filters {
            guard let value = filter.run(data) else { return .killProcess }
            if Int32(bitPattern: value & 0xffff_0000) < Int32(bitPattern: worst & 0xffff_0000) { worst = value }
        }
        return SeccompVerdict(returnValue: worst)
    }
}

extension Tracee {
    /// What `tid`'s seccomp state would do with system call `number` made at `instructionPointer`
    /// (the address after the syscall instruction) with `arguments`. Throws when the filters cannot
    /// be read, so that the caller does not guess.
    public func seccompVerdict(of tid: Int32, number: Int, name: String, instructionPointer: UInt64, arguments: [UInt64]) throws -> SeccompVerdict {
        func cannot(_ why: String) -> GraftError {
            .remoteSyscallRefused(name: name, pid: pid, tid: tid, reason: why)
        }
        guard let status = ProcFS.readFile("/proc/\(pid)/task/\(tid)/status") else {
            throw cannot("graft cannot read /proc/\(pid)/task/\(tid)/status to see whether a seccomp filter would allow the call")
        }
        func field(_ key: String) -> Int? {
            status.split(separator: "\n").first { $0.hasPrefix(key + ":") }
                .flatMap { Int($0.dropFirst(key.count + 1).trimmingCharacters(in: " \t")) }
        }
        switch field("Seccomp") {
        case nil:
            // No Seccomp line: a kernel built without seccomp (CONFIG_SECCOMP=n), so no filter.
            return .allow
        case 0:
            return .allow
        case 1:
            // Strict mode: read, write, _exit and sigreturn only; anything else is SIGKILL.
            return [0, 1, 60, 15].contains(number) ? .allow : .killProcess
        default:
            // Index 0 is the oldest filter (kernel get_nth_filter); read until ENOENT.
            var filters: [SeccompFilter] = []
            while true {
                let index = filters.count
                let count = graft_ptrace(GRAFT_PTRACE_SECCOMP_GET_FILTER, tid, UInt64(index), 0)
                if count < 0 {
                    let code = errno
                    if code == ENOENT, index > 0 { break }  // past the newest filter
                    var why = "it runs under a seccomp filter and graft cannot read it to see whether the call is allowed (PTRACE_SECCOMP_GET_FILTER: \(Errno.describe(code)); it needs CAP_SYS_ADMIN"
                    if let own = ProcFS.readFile("/proc/self/status"), own.contains("\nSeccomp:\t2") || own.contains("\nSeccomp:\t1") {
                        why += ", and graft itself runs under seccomp (a container?), which forbids it"
                    }
                    throw cannot(why + ")")
                }
                guard count > 0, count <= 4096 else { throw cannot("the kernel reported a seccomp filter of \(count) instructions") }
                var raw = [UInt64](repeating: 0, count: Int(count))
                let read = raw.withUnsafeMutableBytes { graft_ptrace(GRAFT_PTRACE_SECCOMP_GET_FILTER, tid, UInt64(index), UInt64(UInt(bitPattern: $0.baseAddress))) }
                guard read == count else {
                    throw cannot("its seccomp filter \(index) changed while graft read it")
                }
                filters.append(SeccompFilter(raw.map { word in
                    BPFInstruction(UInt16(truncatingIfNeeded: word), UInt8(truncatingIfNeeded: word >> 16),
                                   UInt8(truncatingIfNeeded: word >> 24), UInt32(truncatingIfNeeded: word >> 32))
                }))
                if filters.count > 10_000 { throw cannot("it has more seccomp filters than the kernel allows") }
            }
            if let expected = field("Seccomp_filters"), expected != filters.count {
                throw cannot("graft read \(filters.count) of its \(expected) seccomp filters")
            }
            let data = SeccompFilter.data(number: number, instructionPointer: instructionPointer, arguments: arguments)
            // The kernel runs the newest filter first and, among equally severe actions, keeps the first.
            return SeccompFilter.verdict(of: filters.reversed(), for: data)
        }
    }
}
