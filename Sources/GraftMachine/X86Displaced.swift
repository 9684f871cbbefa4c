import GraftCore

/// What a breakpoint engine does with the x86_64 instruction an int3 displaced, so the thread that
/// hit the breakpoint goes on without the int3 ever being removed (no window in which other threads
/// run through an unhooked function).
///
/// As the kernel's uprobes (arch/x86/kernel/uprobes.c): simple instructions are *emulated* by the
/// tracer on the registers, one stop per hit; the rest run *out of line* from a copy in a scratch page,
/// followed by a jump back — graft's copy ends with that jump, so unlike uprobes the thread needs no
/// single-step either. Instructions that cannot move (they branch relative to themselves in ways not
/// emulated, trap, or enter the kernel) are refused before anything is written.
public enum X86DisplacedInstruction: Sendable, Equatable {
    /// nop, endbr64: only rip moves.
    case skip(length: Int)
    /// push r64: rsp -= 8, [rsp] = register (encoding index 0 rax … 15 r15).
    case push(register: Int, length: Int)
    /// mov rbp, rsp (48 89 e5 / 48 8b ec).
    case movRbpRsp(length: Int)
    /// sub rsp, imm / add rsp, imm: rsp and the arithmetic flags change.
    case adjustRsp(subtract: Bool, immediate: UInt64, length: Int)
    /// jmp rel8/rel32.
    case jump(target: UInt64)
    /// call rel32: push the return address, jump.
    case call(target: UInt64, returnAddress: UInt64)
    /// jcc rel8/rel32 with condition code `condition` (the low nibble of 0x7X / 0x0f 0x8X).
    case conditionalJump(condition: UInt8, target: UInt64, fallThrough: UInt64)
    /// jmp [rip+disp] (a PLT slot): jump to the address stored at `slot`.
    case jumpThroughMemory(slot: UInt64)
    /// call [rip+disp]: push the return address, jump to the address stored at `slot`.
    case callThroughMemory(slot: UInt64, returnAddress: UInt64)
    /// ret / ret imm16.
    case ret(popBytes: UInt16)
    /// Anything else: execute a copy elsewhere, then jump back (see `outOfLineCopy`).
    case outOfLine
    /// Cannot be displaced; the reason says why.
    case refused(String)

    /// Whether this instruction is handled on the tracer's side (no out-of-line copy).
    public var isEmulated: Bool {
        switch self {
        case .outOfLine, .refused: return false
        default: return true
        }
    }

    /// A short name for docs and `--verbose` output: "emulated push", "out of line".
    public var strategy: String {
        switch self {
        case .skip: return "emulated (nop)"
        case .push: return "emulated (push)"
        case .movRbpRsp: return "emulated (mov rbp, rsp)"
        case .adjustRsp(let subtract, _, _): return subtract ? "emulated (sub rsp)" : "emulated (add rsp)"
        case .jump: return "emulated (jmp)"
        case .call: return "emulated (call)"
        case .conditionalJump: return "emulated (jcc)"
        case .jumpThroughMemory: return "emulated (jmp [rip])"
        case .callThroughMemory: return "emulated (call [rip])"
        case .ret: return "emulated (ret)"
        case .outOfLine: return "out of line"
        case .refused: return "refused"
        }
    }

    /// Classifies `instruction` (decoded by `Disassembler(.x86_64)`).
    public static func classify(_ instruction: Instruction) -> X86DisplacedInstruction {
        let b = instruction.bytes
        let length = b.count
        if instruction.isEndbr64 || instruction.mnemonic == "nop" { return .skip(length: length) }
        // push r64: 50+r, 41 50+r.
        if length == 1, (0x50...0x57).contains(b[0]) { return .push(register: Int(b[0] - 0x50), length: 1) }
        if length == 2, b[0] == 0x41, (0x50...0x57).contains(b[1]) { return .push(register: 8 + Int(b[1] - 0x50), length: 2) }
        if b == [0x48, 0x89, 0xe5] || b == [0x48, 0x8b, 0xec] { return .movRbpRsp(length: 3) }
        // sub/add rsp, imm8 (48 83 ec/c4 ib) and imm32 (48 81 ec/c4 id), sign-extended.
        if length == 4, b[0] == 0x48, b[1] == 0x83, b[2] == 0xec || b[2] == 0xc4 {
            let imm = UInt64(bitPattern: Int64(Int8(bitPattern: b[3])))
            return .adjustRsp(subtract: b[2] == 0xec, immediate: imm, length: 4)
        }
        if length == 7, b[0] == 0x48, b[1] == 0x81, b[2] == 0xec || b[2] == 0xc4 {
            let raw = UInt32(b[3]) | UInt32(b[4]) << 8 | UInt32(b[5]) << 16 | UInt32(b[6]) << 24
            let imm = UInt64(bitPattern: Int64(Int32(bitPattern: raw)))
            return .adjustRsp(subtract: b[2] == 0xec, immediate: imm, length: 7)
        }
        if instruction.isReturn {
            let core = b.drop(while: { $0 == 0xf3 || $0 == 0xf2 })  // rep ret, bnd ret
            if core.first == 0xc3 && core.count == 1 { return .ret(popBytes: 0) }
            if core.first == 0xc2 && core.count == 3 {
                let i = core.startIndex
                return .ret(popBytes: UInt16(core[i + 1]) | UInt16(core[i + 2]) << 8)
            }
            return .refused("'\(instruction.text)' (far or interrupt return) cannot be displaced")
        }
        if instruction.isInterrupt {
            return .refused("'\(instruction.text)' is a trap: another debugger's breakpoint, or code that must not move")
        }
        if instruction.isSyscall {
            return .refused("'\(instruction.text)' enters the kernel; a thread could block in it outside the function")
        }
        if let target = instruction.branchTarget {
            if instruction.isJump { return .jump(target: target) }
            if instruction.isCall { return .call(target: target, returnAddress: instruction.end) }
            if instruction.isConditionalBranch {
                let opcode = b.drop(while: { $0 == 0x2e || $0 == 0x3e || $0 == 0xf2 })  // branch hints, bnd
                if let first = opcode.first, (0x70...0x7f).contains(first) {
                    return .conditionalJump(condition: first & 0x0f, target: target, fallThrough: instruction.end)
                }
                if opcode.count >= 2, opcode.first == 0x0f, (0x80...0x8f).contains(opcode[opcode.startIndex + 1]) {
                    return .conditionalJump(condition: opcode[opcode.startIndex + 1] & 0x0f, target: target, fallThrough: instruction.end)
                }
                return .refused("'\(instruction.text)' (loop/jrcxz) branches relative to itself and is not emulated")
            }
        }
        if instruction.isJump || instruction.isCall {
            // Indirect: through [rip+disp] is emulated; a register or other memory operand is copied
            // out of line for jmp (it never comes back to the copy) but refused for call, whose return
            // address would point into graft's scratch page.
            if instruction.isRIPRelative, let offset = instruction.ripDisplacementOffset, offset + 4 <= length {
                let slot = instruction.end &+ UInt64(bitPattern: Int64(readLittleEndianInt32(b, at: offset)))
                return instruction.isJump ? .jumpThroughMemory(slot: slot)
                    : .callThroughMemory(slot: slot, returnAddress: instruction.end)
            }
            if instruction.isCall {
                return .refused("'\(instruction.text)' is an indirect call: its return address would point into graft's scratch page")
            }
            return .outOfLine
        }
        if instruction.isConditionalBranch {
            return .refused("'\(instruction.text)' branches relative to itself and is not emulated")
        }
        if instruction.isRIPRelative && instruction.ripDisplacementOffset == nil {
            return .refused("'\(instruction.text)' addresses memory relative to rip in a form graft cannot relocate")
        }
        return .outOfLine
    }

    /// The bytes of an out-of-line copy of `instruction` placed at `slot`: the instruction (its rip-
    /// relative displacement rewritten so it still addresses the same memory) followed by a jump back
    /// to the instruction after the original (`jmp rel32`, or `jmp [rip+0]` + address when more than
    /// ±2 GiB away). Nil when a rip-relative operand would be out of reach from `slot`.
    public static func outOfLineCopy(of instruction: Instruction, at slot: UInt64) -> [UInt8]? {
        var copy = instruction.bytes
        if instruction.isRIPRelative {
            guard let offset = instruction.ripDisplacementOffset else { return nil }
            let target = instruction.end &+ UInt64(bitPattern: Int64(readLittleEndianInt32(copy, at: offset)))
            let newEnd = slot &+ UInt64(copy.count)
            let displacement = Int64(bitPattern: target &- newEnd)
            guard displacement >= Int64(Int32.min), displacement <= Int64(Int32.max) else { return nil }
            let raw = UInt32(bitPattern: Int32(displacement))
            for i in 0..<4 { copy[offset + i] = UInt8(truncatingIfNeeded: raw >> (8 * UInt32(i))) }
        }
        let jumpAt = slot &+ UInt64(copy.count)
        if let jump = X86_64.jumpRel32(from: jumpAt, to: instruction.end) {
            copy += jump
        } else {
            copy += X86_64.jumpAbsolute(to: instruction.end)
        }
        return copy
    }

    /// Whether jcc condition `code` (0 jo … 15 jg) holds for `eflags`.
    public static func conditionHolds(_ code: UInt8, eflags: UInt64) -> Bool {
        let cf = eflags & 0x1 != 0, pf = eflags & 0x4 != 0, zf = eflags & 0x40 != 0
        let sf = eflags & 0x80 != 0, of = eflags & 0x800 != 0
        let base: Bool
        switch code >> 1 {
        case 0: base = of
        case 1: base = cf
        case 2: base = zf
        case 3: base = cf || zf
        case 4: base = sf
        case 5: base = pf
        case 6: base = sf != of
        default: base = zf || (sf != of)
        }
        return code & 1 == 0 ? base : !base
    }

    /// rsp after `sub`/`add rsp, immediate`, and eflags with CF, PF, AF, ZF, SF, OF set as the CPU would.
    public static func adjust(rsp: UInt64, immediate: UInt64, subtract: Bool, eflags: UInt64) -> (rsp: UInt64, eflags: UInt64) {
        let result = subtract ? rsp &- immediate : rsp &+ immediate
        let carry = subtract ? rsp < immediate : result < rsp
        let overflow = subtract
            ? ((rsp ^ immediate) & (rsp ^ result)) >> 63 != 0
            : (~(rsp ^ immediate) & (rsp ^ result)) >> 63 != 0
        let adjust = ((rsp ^ immediate ^ result) >> 4) & 1 != 0
        let parity = (result & 0xff).nonzeroBitCount % 2 == 0
        var flags = eflags & ~UInt64(0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x800)
        if carry { flags |= 0x1 }
        if parity { flags |= 0x4 }
        if adjust { flags |= 0x10 }
        if result == 0 { flags |= 0x40 }
        if result >> 63 != 0 { flags |= 0x80 }
        if overflow { flags |= 0x800 }
        return (result, flags)
    }

}
