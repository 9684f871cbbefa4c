import GraftCore

/// One decoded machine instruction, a plain value detached from capstone.
/// Every flag is computed for x86_64 and i386. On aarch64 and arm32 (capstone 4's arm groups are
/// unreliable, e.g. aarch64 `bl` is not in CS_GRP_CALL, so they come from instruction ids) only
/// `isCall`, `isReturn`, `isJump`, `isConditionalBranch`, `branchTarget` and `pcRelativeAddress` are;
/// the x86 flags stay false.
public struct Instruction: Sendable, Equatable {
    /// Where the instruction starts.
    public let address: UInt64
    /// Its encoding, in memory order.
    public let bytes: [UInt8]
    public var size: Int { bytes.count }
    /// capstone's mnemonic, including a rep/lock prefix ("rep movsb", "lock cmpxchg").
    public let mnemonic: String
    /// capstone's operand text ("eax, dword ptr [rip + 0x10]"), empty when there are none.
    public let operands: String
    /// `mnemonic operands`, e.g. "mov eax, 1".
    public var text: String {
        operands.isEmpty ? mnemonic : "\(mnemonic) \(operands)"
    }
    /// A call (direct or indirect, near or far).
    public let isCall: Bool
    /// ret, ret n, retf, iret.
    public let isReturn: Bool
    /// An unconditional jmp (direct or indirect, near or far).
    public let isJump: Bool
    /// jcc, loop/loope/loopne, jcxz/jecxz/jrcxz, and xbegin (whose abort path branches to its target).
    public let isConditionalBranch: Bool
    /// Absolute target of a direct (immediate) near jmp/jcc/call/loop/jrcxz; nil for indirect and far
    /// branches and for everything else.
    public let branchTarget: UInt64?
    /// Some memory operand is addressed relative to rip (or eip under an 0x67 prefix): moving the
    /// instruction elsewhere changes what it reads or writes.
    public let isRIPRelative: Bool
    /// For a rip-relative instruction, where its 32-bit displacement sits in `bytes` (nil otherwise):
    /// what an out-of-line copy must rewrite to keep addressing the same memory.
    public let ripDisplacementOffset: Int?
    /// The bytes are exactly `endbr64` (f3 0f 1e fa).
    public let isEndbr64: Bool
    /// syscall, sysenter, or `int 0x80` (the i386 system-call gate, also reachable from 64-bit code).
    public let isSyscall: Bool
    /// int3, int n, int1 (icebp), into.
    public let isInterrupt: Bool
    /// A string instruction with a rep/repe/repne prefix: it may be stopped part-way with the pc still on it.
    public let hasRepPrefix: Bool
    /// arm32/aarch64: the address a pc-relative operand reads — a literal pool word (`ldr r0, [pc, #8]`,
    /// `ldr x0, #0x400120`) or an `adr`'s result. nil otherwise (and always on x86: see `isRIPRelative`).
    public let pcRelativeAddress: UInt64?

    /// The address just past the instruction.
    public var end: UInt64 { address + UInt64(size) }

    public init(address: UInt64, bytes: [UInt8], mnemonic: String, operands: String,
                isCall: Bool = false, isReturn: Bool = false, isJump: Bool = false,
                isConditionalBranch: Bool = false, branchTarget: UInt64? = nil,
                isRIPRelative: Bool = false, isEndbr64: Bool = false, isSyscall: Bool = false,
                isInterrupt: Bool = false, hasRepPrefix: Bool = false, ripDisplacementOffset: Int? = nil,
                pcRelativeAddress: UInt64? = nil) {
        self.address = address
        self.bytes = bytes
        self.mnemonic = mnemonic
        self.operands = operands
        self.isCall = isCall
        self.isReturn = isReturn
        self.isJump = isJump
        self.isConditionalBranch = isConditionalBranch
        self.branchTarget = branchTarget
        self.isRIPRelative = isRIPRelative
        self.isEndbr64 = isEndbr64
        self.isSyscall = isSyscall
        self.isInterrupt = isInterrupt
        self.hasRepPrefix = hasRepPrefix
        self.ripDisplacementOffset = ripDisplacementOffset
        self.pcRelativeAddress = pcRelativeAddress
    }
}

extension Instruction: CustomStringConvertible {
    /// `0x401000: e9 fb ff ff ff  jmp 0x401000`.
    public var description: String { "\(hex(address)): \(hexBytes(bytes))  \(text)" }
}

extension Instruction {
    /// The instruction leaves the stack pointer moved once it has run (x86): push/pop (and the
    /// flag and all-register forms), enter, leave, or one whose destination is rsp/esp/sp
    /// (`sub rsp, 0x18`, `and rsp, -16`, `mov rsp, rbp`, `lea rsp, […]`; `xchg` either way).
    /// A call is not counted (the stack is as before once it returns), nor a ret (it leaves the
    /// function: code after it is reached by another path). A jump patch or a return stub placed
    /// after such an instruction would find the stack as the prologue made it.
    public var changesStackPointer: Bool {
        let name = mnemonic.split(separator: " ").last.map(String.init) ?? mnemonic
        let stackOps: Set<String> = ["push", "pushq", "pushw", "pushf", "pushfq", "pushfw", "pusha", "pushal", "pushaw",
                                     "pop", "popq", "popw", "popf", "popfq", "popfw", "popa", "popal", "popaw", "enter", "leave"]
        if stackOps.contains(name) { return true }
        let stackRegisters: Set<String> = ["rsp", "esp", "sp", "spl"]
        let parts = operands.split(separator: ",").map { String($0.filter { $0 != " " }) }
        if name == "xchg" || name == "xadd" { return parts.contains { stackRegisters.contains($0) } }
        return parts.first.map { stackRegisters.contains($0) } ?? false
    }
}
