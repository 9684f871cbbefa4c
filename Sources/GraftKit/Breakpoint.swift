import GraftMachine

/// One int3 graft placed. A breakpoint can be a hook's entry, a return site, or both. A class: the
/// hit path looks one up per stop, and a struct holding an `Instruction` (strings, bytes) would be
/// copied, with its retains and releases, every time.
final class Breakpoint {
    let address: UInt64
    /// The byte the int3 replaced.
    let originalByte: UInt8
    let instruction: Instruction
    let displaced: X86DisplacedInstruction
    /// Out-of-line copy, for `.outOfLine`.
    var slot: UInt64?
    var entryHook: Int?
    var isReturnSite: Bool
    /// At a function's first instruction (or the one after its endbr64): the return address is at rsp.
    var atFunctionEntry = false
    /// A Go function's entry: its arguments are in Go's registers (rax, rbx, rcx, rdi, rsi, r8–r11).
    var goABI = false
    /// A Go ABI0 (assembly) function's entry: every argument is on the stack above the return address.
    var stackArguments = false
    /// `graft hook --hardware`: the debug register (DR0–DR3) that holds it; no int3 was written, the
    /// trap leaves rip at `address` and the thread goes on there (see `DebugSlots`).
    var hardwareSlot: Int?
    /// Where the thread goes on when nothing but its pc has to change (the out-of-line copy, the
    /// end of a nop, a jump's target); nil when the displaced instruction touches other registers
    /// or memory. The pc-only fast path (`pcOnlyHit`) needs no more than this.
    /// The displaced instruction is one byte and emulated, so a thread that ran it legitimately stands
    /// exactly where an int3 leaves one: a SIGTRAP there proves nothing by the pc alone (see
    /// `HookEngine.trapIsOurs`).
    var pcIsAmbiguous: Bool {
        guard slot == nil, instruction.size == 1 else { return false }
        switch displaced {
        case .skip, .push: return true
        default: return false
        }
    }
    var resumeAt: UInt64? {
        switch displaced {
        case .skip(let length): return address &+ UInt64(length)
        case .jump(let target): return target
        case .outOfLine, .push: return slot
        default: return nil
        }
    }

    init(address: UInt64, originalByte: UInt8, instruction: Instruction, displaced: X86DisplacedInstruction,
         slot: UInt64?, entryHook: Int?, isReturnSite: Bool = false) {
        self.address = address
        self.originalByte = originalByte
        self.instruction = instruction
        self.displaced = displaced
        self.slot = slot
        self.entryHook = entryHook
        self.isReturnSite = isReturnSite
    }
}

/// A call whose return graft waits for.
struct PendingReturn {
    let hook: Int
    /// rsp at the entry: the return address sits there, so after `ret` rsp == entryRSP + 8.
    let entryRSP: UInt64
    let returnAddress: UInt64
    let start: UInt64
    /// The call's `HookHit.call`.
    var call: UInt64 = 0
    /// Its output buffers, read at the return (`OutputArguments`).
    var outputs: [PendingOutput] = []
}
