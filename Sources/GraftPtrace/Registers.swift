import CGraftShim

/// The general-purpose registers of a stopped thread (x86_64 `struct user_regs_struct`,
/// PTRACE_GETREGS / PTRACE_SETREGS).
public struct Registers: Sendable {
    var raw: user_regs_struct

    init(raw: user_regs_struct) { self.raw = raw }

    public var rip: UInt64 { get { raw.rip } set { raw.rip = newValue } }
    public var rsp: UInt64 { get { raw.rsp } set { raw.rsp = newValue } }
    public var rbp: UInt64 { get { raw.rbp } set { raw.rbp = newValue } }
    public var rax: UInt64 { get { raw.rax } set { raw.rax = newValue } }
    public var rbx: UInt64 { get { raw.rbx } set { raw.rbx = newValue } }
    public var rcx: UInt64 { get { raw.rcx } set { raw.rcx = newValue } }
    public var rdx: UInt64 { get { raw.rdx } set { raw.rdx = newValue } }
    public var rsi: UInt64 { get { raw.rsi } set { raw.rsi = newValue } }
    public var rdi: UInt64 { get { raw.rdi } set { raw.rdi = newValue } }
    public var r8: UInt64 { get { raw.r8 } set { raw.r8 = newValue } }
    public var r9: UInt64 { get { raw.r9 } set { raw.r9 = newValue } }
    public var r10: UInt64 { get { raw.r10 } set { raw.r10 = newValue } }
    public var r11: UInt64 { get { raw.r11 } set { raw.r11 = newValue } }
    public var r12: UInt64 { get { raw.r12 } set { raw.r12 = newValue } }
    public var r13: UInt64 { get { raw.r13 } set { raw.r13 = newValue } }
    public var r14: UInt64 { get { raw.r14 } set { raw.r14 = newValue } }
    public var r15: UInt64 { get { raw.r15 } set { raw.r15 = newValue } }
    public var eflags: UInt64 { get { raw.eflags } set { raw.eflags = newValue } }
    /// The syscall number the kernel keeps for restart logic; -1 (all ones) when not in a syscall.
    public var origRax: UInt64 { get { raw.orig_rax } set { raw.orig_rax = newValue } }
    public var fsBase: UInt64 { raw.fs_base }

    /// SysV x86_64 integer argument registers, in order.
    public var integerArguments: [UInt64] { [rdi, rsi, rdx, rcx, r8, r9] }
    /// Go's register ABI (ABIInternal, Go ≥ 1.17): the integer arguments in order.
    public var goIntegerArguments: [UInt64] { [rax, rbx, rcx, rdi, rsi, r8, r9, r10, r11] }

    /// Every register but rip is the same as in `other`: then writing rip alone
    /// (`Tracee.setProgramCounter`) is enough.
    public func differsOnlyInPC(from other: Registers) -> Bool {
        var a = raw, b = other.raw
        a.rip = 0
        b.rip = 0
        return withUnsafeBytes(of: &a) { x in withUnsafeBytes(of: &b) { y in x.elementsEqual(y) } }
    }
}

extension Registers {
    /// A 64-bit general-purpose register by its x86 encoding number (0 rax, 1 rcx, 2 rdx, 3 rbx,
    /// 4 rsp, 5 rbp, 6 rsi, 7 rdi, 8–15 r8–r15), as instructions name them.
    public subscript(encoding index: Int) -> UInt64 {
        get {
            switch index {
            case 0: return rax
            case 1: return rcx
            case 2: return rdx
            case 3: return rbx
            case 4: return rsp
            case 5: return rbp
            case 6: return rsi
            case 7: return rdi
            case 8: return r8
            case 9: return r9
            case 10: return r10
            case 11: return r11
            case 12: return r12
            case 13: return r13
            case 14: return r14
            default: return r15
            }
        }
    }
}
