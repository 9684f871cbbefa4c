import GraftCore

/// The registers and memory of a stopped thread, as far as running a displaced instruction needs
/// them: the hit path's view of the thread (GraftKit's `StoppedThread`, over PTRACE_GETREGS'
/// registers and PEEKDATA/POKEDATA) and the golden tests' fake.
public protocol X86ThreadState {
    var rip: UInt64 { get set }
    var rsp: UInt64 { get set }
    var rbp: UInt64 { get set }
    var eflags: UInt64 { get set }
    /// A general-purpose register by its encoding (0 rax … 15 r15).
    func register(encoding: Int) -> UInt64
    /// The 8-byte little-endian word at `address`.
    mutating func readWord(at address: UInt64) throws -> UInt64
    mutating func writeWord(_ value: UInt64, at address: UInt64) throws
}

extension X86DisplacedInstruction {
    /// Runs the displaced instruction, which stood at `address`, on `thread`: emulated on its
    /// registers and memory, or by sending it to `slot`, the instruction's out-of-line copy (for
    /// `.outOfLine`, and for a `.push` that has one: running the copy natively costs no POKEDATA).
    /// Throws `hookRefused` for `.refused`, and for `.outOfLine` without a copy.
    ///
    /// `@inlinable`: the hit path calls it with a concrete `State`, and the specialization must be
    /// made in the caller's module (no generic dispatch, no metadata look-up per hit).
    @inlinable
    public func execute<State: X86ThreadState>(at address: UInt64, slot: UInt64?, on thread: inout State) throws {
        switch self {
        case .skip(let length):
            thread.rip = address &+ UInt64(length)
        case .push(let register, let length):
            if let slot {
                thread.rip = slot
                return
            }
            let value = thread.register(encoding: register)
            thread.rsp &-= 8
            try thread.writeWord(value, at: thread.rsp)
            thread.rip = address &+ UInt64(length)
        case .movRbpRsp(let length):
            thread.rbp = thread.rsp
            thread.rip = address &+ UInt64(length)
        case .adjustRsp(let subtract, let immediate, let length):
            let result = X86DisplacedInstruction.adjust(rsp: thread.rsp, immediate: immediate, subtract: subtract, eflags: thread.eflags)
            thread.rsp = result.rsp
            thread.eflags = result.eflags
            thread.rip = address &+ UInt64(length)
        case .jump(let target):
            thread.rip = target
        case .call(let target, let returnAddress):
            thread.rsp &-= 8
            try thread.writeWord(returnAddress, at: thread.rsp)
            thread.rip = target
        case .conditionalJump(let condition, let target, let fallThrough):
            thread.rip = X86DisplacedInstruction.conditionHolds(condition, eflags: thread.eflags) ? target : fallThrough
        case .jumpThroughMemory(let pointer):
            thread.rip = try thread.readWord(at: pointer)
        case .callThroughMemory(let pointer, let returnAddress):
            let target = try thread.readWord(at: pointer)
            thread.rsp &-= 8
            try thread.writeWord(returnAddress, at: thread.rsp)
            thread.rip = target
        case .ret(let popBytes):
            thread.rip = try thread.readWord(at: thread.rsp)
            thread.rsp &+= 8 &+ UInt64(popBytes)
        case .outOfLine:
            guard let slot else { throw X86DisplacedInstruction.refusal(at: address, "no out-of-line copy") }
            thread.rip = slot
        case .refused(let reason):
            throw X86DisplacedInstruction.refusal(at: address, reason)
        }
    }

    /// Outlined: the error (a String) is built only on the refusal path.
    @usableFromInline
    static func refusal(at address: UInt64, _ reason: String) -> GraftError {
        GraftError.hookRefused(function: hex(address), address: address, reason: reason)
    }
}
