import CGraftShim
import GraftCore
import Glibc

/// The x86 debug registers of one thread (DR0–DR3 addresses, DR6 status, DR7 control), through
/// PTRACE_PEEKUSER/POKEUSER at `u_debugreg` in struct user. The kernel keeps them per thread (a
/// clone or fork child starts with none; exec clears them) and checks each write: an address in
/// kernel space, a misaligned watch or a DR7 it cannot honour fail with EINVAL (or ENOSPC when the
/// perf subsystem has no slot left).
extension Tracee {
    /// DR`index` of a stopped thread.
    public func debugRegister(_ index: Int, of tid: Int32) throws -> UInt64 {
        try tracer.run {
            var value: UInt64 = 0
            if graft_peekuser(tid, graft_debugreg_offset(Int32(index)), &value) != 0 {
                throw GraftError.ptrace("PTRACE_PEEKUSER", tid: tid, context: "debug register DR\(index) of thread \(tid)")
            }
            return value
        }
    }

    /// Writes DR`index` of a stopped thread. Write an address register before enabling it in DR7,
    /// and disable it in DR7 before changing it.
    public func setDebugRegister(_ index: Int, to value: UInt64, of tid: Int32) throws {
        try tracer.run {
            if graft_ptrace(Int(GRAFT_PTRACE_POKEUSER), tid, graft_debugreg_offset(Int32(index)), value) != 0 {
                let code = errno
                if code == ESRCH { throw GraftError.threadVanished(tid: tid) }
                let what = index == 7 ? "DR7 = \(hex(value))" : "DR\(index) = \(hex(value))"
                let why = code == EINVAL ? ": the kernel refused it (an address outside user space, or a length and alignment x86 cannot watch)"
                    : code == ENOSPC ? ": no hardware breakpoint slot is left (another tool, or perf, uses the debug registers)" : ""
                throw GraftError.systemCall(name: "PTRACE_POKEUSER", errno: code, context: "\(what) on thread \(tid)\(why)")
            }
        }
    }
}

/// One debug register's job, as DR7 encodes it (Intel SDM vol. 3, 18.2.4).
public enum DebugCondition: Sendable, Equatable {
    /// Break before the instruction at the address runs (RW = 00, LEN must be 00).
    case execute
    /// Break after an instruction wrote any of the watched bytes (RW = 01).
    case write
    /// Break after an instruction read or wrote them (RW = 11; x86 has no read-only watch).
    case access

    var rwBits: UInt64 {
        switch self {
        case .execute: return 0b00
        case .write: return 0b01
        case .access: return 0b11
        }
    }
}

/// DR7 for a set of slots: each enabled locally (L0–L3), with its condition and length.
public struct DebugControl: Sendable, Equatable {
    public private(set) var value: UInt64 = 0

    public init() {}

    /// Lengths x86 can watch: 1, 2, 4 or 8 bytes, the address aligned to the length.
    public static let lengths = [1, 2, 4, 8]

    public mutating func enable(_ slot: Int, _ condition: DebugCondition, length: Int) {
        let lenBits: UInt64
        switch condition == .execute ? 1 : length {
        case 2: lenBits = 0b01
        case 4: lenBits = 0b11
        case 8: lenBits = 0b10
        default: lenBits = 0b00
        }
        disable(slot)
        value |= 1 << UInt64(slot * 2)
        value |= (condition.rwBits | lenBits << 2) << UInt64(16 + slot * 4)
    }

    public mutating func disable(_ slot: Int) {
        value &= ~(0b11 << UInt64(slot * 2))
        value &= ~(0xf << UInt64(16 + slot * 4))
    }

    public func isEnabled(_ slot: Int) -> Bool { value & (0b11 << UInt64(slot * 2)) != 0 }
}
