import GraftCore

/// Moves the first instructions of an x86_64 function into a trampoline, so that the function can be
/// overwritten by a jump and its original behaviour still be called: the trampoline runs the moved
/// instructions, then jumps back to the first instruction that was not moved.
///
/// What changes when an instruction moves (as frida-gum's x86 relocator, google/orbit and Dobby do):
/// - a rip-relative memory operand gets a new displacement that addresses the same memory (refused
///   when the memory is more than ±2 GiB from the trampoline: place it near the function);
/// - `jmp rel8/rel32` becomes `jmp rel32`, or `jmp [rip+0]` + address when out of reach;
/// - `jcc rel8/rel32` becomes `jcc rel32`, or the inverted `jcc` over a `jmp [rip+0]` + address;
/// - `call rel32` becomes `call rel32`, or `call [rip+2]; jmp +8; .quad target` (the return lands on
///   the short jump, which goes on with the next moved instruction);
/// - a branch to another moved instruction is aimed at its copy;
/// - everything else is copied byte for byte.
/// Refused, by name: `loop`/`jrcxz`/`xbegin` (rel8-only or abort forms), int3/int n (someone's
/// breakpoint), a rip-relative form without a 32-bit displacement, a branch into the middle of a
/// moved instruction. A trampoline starts with `endbr64` (an indirect call through
/// `graft_original_<name>` must land on one under IBT; a nop elsewhere).
///
/// Pure: instructions and addresses in, bytes out. The caller decodes (`Disassembler`) and writes.
public enum X86Relocator {
    /// A trampoline ready to be written at `address`.
    public struct Trampoline: Sendable, Equatable {
        /// Where the bytes go.
        public let address: UInt64
        public let bytes: [UInt8]
        /// The moved instructions' original addresses and where each one's copy starts: a thread
        /// stopped at `original` goes on at `relocated` (the same state, the same next instruction).
        public let addressMap: [AddressPair]
        /// The first original byte not moved: where the trampoline jumps back to.
        public let resumeAddress: UInt64
        /// How many original bytes were moved (≥ the length asked for).
        public var movedLength: Int { Int(resumeAddress - (addressMap.first?.original ?? resumeAddress)) }

        /// Where a thread stopped at `original` goes on, nil when `original` is not the start of a
        /// moved instruction.
        public func relocated(_ original: UInt64) -> UInt64? {
            addressMap.first { $0.original == original }?.relocated
        }
    }

    public struct AddressPair: Sendable, Equatable {
        public let original: UInt64
        public let relocated: UInt64
        public init(original: UInt64, relocated: UInt64) {
            self.original = original
            self.relocated = relocated
        }
    }

    /// Why an instruction cannot move; `description` names it.
    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public let instruction: Instruction
        public let reason: String
        public var description: String { "'\(instruction.text)' at \(hex(instruction.address)) cannot be relocated: \(reason)" }
    }

    /// Bytes the trampoline needs at most for `instructions` (each branch in its longest form),
    /// for sizing the memory before its address is known.
    public static func maximumSize(of instructions: [Instruction]) -> Int {
        X86_64.endbr64.count + instructions.reduce(0) { $0 + max($1.size, 16) } + X86_64.absoluteJumpLength
    }

    /// Moves the leading instructions of `instructions` (consecutive, decoded at their addresses)
    /// that cover at least `length` bytes into a trampoline at `address`. Throws `Refusal` for the
    /// first instruction that cannot move, or when the instructions cover fewer than `length` bytes.
    public static func relocate(_ instructions: [Instruction], length: Int, to address: UInt64) throws -> Trampoline {
        guard let first = instructions.first else {
            throw Refusal(instruction: Instruction(address: address, bytes: [], mnemonic: "(none)", operands: ""),
                          reason: "no instructions to move")
        }
        var moved: [Instruction] = []
        var covered = 0
        for instruction in instructions where covered < length {
            guard instruction.address == first.address &+ UInt64(covered) else { break }
            moved.append(instruction)
            covered += instruction.size
        }
        guard covered >= length, let last = moved.last else {
            throw Refusal(instruction: moved.last ?? first, reason: "the function has only \(covered) bytes of whole instructions; \(length) are needed")
        }
        let start = first.address, end = last.end
        let inside = { (target: UInt64) in target >= start && target < end }

        // Pass 1: each copy's form and size. A copy's position depends only on the sizes before it,
        // and a branch to another moved instruction always reaches (rel32 inside the trampoline).
        var forms: [Form] = []
        var position = address &+ UInt64(X86_64.endbr64.count)
        var map: [AddressPair] = []
        for instruction in moved {
            let form = try choose(instruction, at: position, inside: inside)
            forms.append(form)
            map.append(AddressPair(original: instruction.address, relocated: position))
            position &+= UInt64(form.size(copying: instruction))
        }
        let relocatedTarget = { (target: UInt64, from: Instruction) throws -> UInt64 in
            guard let pair = map.first(where: { $0.original == target }) else {
                throw Refusal(instruction: from, reason: "it branches into the middle of a moved instruction (\(hex(target)))")
            }
            return pair.relocated
        }

        // Pass 2: the bytes.
        var bytes = X86_64.endbr64
        for (index, instruction) in moved.enumerated() {
            let at = map[index].relocated
            switch forms[index] {
            case .copy:
                bytes += instruction.bytes
            case .ripRelative(let offset):
                var copy = instruction.bytes
                let target = instruction.end &+ UInt64(bitPattern: Int64(readLittleEndianInt32(copy, at: offset)))
                let displacement = Int64(bitPattern: target &- (at &+ UInt64(copy.count)))
                let raw = UInt32(bitPattern: Int32(displacement))  // reach checked in pass 1
                for i in 0..<4 { copy[offset + i] = UInt8(truncatingIfNeeded: raw >> (8 * UInt32(i))) }
                bytes += copy
            case .jumpNear(let target, let isInternal):
                let to = isInternal ? try relocatedTarget(target, instruction) : target
                bytes += [0xe9] + le32(to &- (at &+ 5))
            case .jumpFar(let target):
                bytes += X86_64.jumpAbsolute(to: target)
            case .conditionalNear(let condition, let target, let isInternal):
                let to = isInternal ? try relocatedTarget(target, instruction) : target
                bytes += [0x0f, 0x80 | condition] + le32(to &- (at &+ 6))
            case .conditionalFar(let condition, let target):
                // Not taken: skip the 14-byte absolute jump.
                bytes += [0x70 | (condition ^ 1), UInt8(X86_64.absoluteJumpLength)] + X86_64.jumpAbsolute(to: target)
            case .callNear(let target, let isInternal):
                let to = isInternal ? try relocatedTarget(target, instruction) : target
                bytes += [0xe8] + le32(to &- (at &+ 5))
            case .callFar(let target):
                // call [rip+2] reads the quad after the short jump; the return lands on `jmp +8`.
                bytes += [0xff, 0x15, 0x02, 0x00, 0x00, 0x00, 0xeb, 0x08] + littleEndian(target)
            }
        }
        let back = address &+ UInt64(bytes.count)
        bytes += X86_64.jump(from: back, to: end)
        return Trampoline(address: address, bytes: bytes, addressMap: map, resumeAddress: end)
    }

    /// How one moved instruction is written.
    enum Form {
        case copy
        case ripRelative(displacementOffset: Int)
        case jumpNear(target: UInt64, isInternal: Bool)
        case jumpFar(target: UInt64)
        case conditionalNear(condition: UInt8, target: UInt64, isInternal: Bool)
        case conditionalFar(condition: UInt8, target: UInt64)
        case callNear(target: UInt64, isInternal: Bool)
        case callFar(target: UInt64)

        /// Bytes the form takes in the trampoline (a copy: the instruction's own).
        func size(copying instruction: Instruction) -> Int {
            switch self {
            case .copy, .ripRelative: return instruction.size
            case .jumpNear, .callNear: return 5
            case .conditionalNear: return 6
            case .jumpFar: return X86_64.absoluteJumpLength
            case .conditionalFar: return 2 + X86_64.absoluteJumpLength
            case .callFar: return 16
            }
        }
    }

    private static func choose(_ instruction: Instruction, at position: UInt64, inside: (UInt64) -> Bool) throws -> Form {
        let b = instruction.bytes
        if instruction.isInterrupt {
            throw Refusal(instruction: instruction, reason: "it is a trap (int3: another debugger's breakpoint?)")
        }
        let opcode = Array(b.drop(while: { $0 == 0x2e || $0 == 0x3e || $0 == 0xf2 }))  // branch hints, bnd
        if opcode.first == 0xc7, opcode.count > 1, opcode[1] == 0xf8 {
            throw Refusal(instruction: instruction, reason: "xbegin's abort address is relative to it")
        }
        if let target = instruction.branchTarget {
            let isInternal = inside(target)
            func reaches(_ size: Int) -> Bool {
                isInternal || Int32(exactly: Int64(bitPattern: target &- (position &+ UInt64(size)))) != nil
            }
            if instruction.isJump {
                return reaches(5) ? .jumpNear(target: target, isInternal: isInternal) : .jumpFar(target: target)
            }
            if instruction.isCall {
                return reaches(5) ? .callNear(target: target, isInternal: isInternal) : .callFar(target: target)
            }
            if instruction.isConditionalBranch {
                var condition: UInt8?
                if let first = opcode.first, (0x70...0x7f).contains(first) { condition = first & 0x0f }
                if opcode.count >= 2, opcode[0] == 0x0f, (0x80...0x8f).contains(opcode[1]) { condition = opcode[1] & 0x0f }
                guard let condition else {
                    throw Refusal(instruction: instruction, reason: "loop/jrcxz have only an 8-bit displacement and are not rewritten")
                }
                // A branch among the moved bytes always reaches (`reaches` is true for it).
                return reaches(6) ? .conditionalNear(condition: condition, target: target, isInternal: isInternal)
                                  : .conditionalFar(condition: condition, target: target)
            }
        }
        if instruction.isConditionalBranch {
            throw Refusal(instruction: instruction, reason: "it branches relative to itself in a form graft does not rewrite")
        }
        if instruction.isRIPRelative {
            guard let offset = instruction.ripDisplacementOffset, offset + 4 <= b.count else {
                throw Refusal(instruction: instruction, reason: "its rip-relative operand has no 32-bit displacement to re-aim")
            }
            let target = instruction.end &+ UInt64(bitPattern: Int64(readLittleEndianInt32(b, at: offset)))
            if inside(target) {
                throw Refusal(instruction: instruction, reason: "it addresses the moved bytes themselves (\(hex(target)))")
            }
            let displacement = Int64(bitPattern: target &- (position &+ UInt64(b.count)))
            guard Int32(exactly: displacement) != nil else {
                throw Refusal(instruction: instruction, reason: "the memory it addresses (\(hex(target))) is more than ±2 GiB from the trampoline at \(hex(position))")
            }
            return .ripRelative(displacementOffset: offset)
        }
        return .copy
    }


    private static func le32(_ difference: UInt64) -> [UInt8] {
        littleEndian(UInt32(truncatingIfNeeded: difference))
    }
}
