import CGraftShim
import GraftCore
import Glibc

/// The SSE registers of a stopped thread (PTRACE_GETFPREGS, `struct user_fpregs_struct`): where
/// SysV and Go pass `float`/`double` arguments and return a floating-point result.
extension Tracee {
    /// The low 64 bits of xmm0…xmm15 (a `double` in full; a `float` in the low 32 bits).
    public func vectorRegisters(of tid: Int32) throws -> [UInt64] {
        try tracer.run {
            var raw = user_fpregs_struct()
            let ok = withUnsafeMutablePointer(to: &raw) { pointer in
                graft_ptrace(GRAFT_PTRACE_GETFPREGS, tid, 0, UInt64(UInt(bitPattern: pointer))) == 0
            }
            if !ok { throw GraftError.ptrace("PTRACE_GETFPREGS", tid: tid, context: "xmm registers of thread \(tid)") }
            // xmm_space: 16 registers of 4 32-bit words each.
            return withUnsafeBytes(of: &raw.xmm_space) { bytes in
                (0..<16).map { bytes.loadUnaligned(fromByteOffset: $0 * 16, as: UInt64.self) }
            }
        }
    }
}
