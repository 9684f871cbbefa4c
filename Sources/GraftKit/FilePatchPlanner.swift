import GraftCore
import GraftELF
import GraftMachine

/// A patch of a program file, computed whole before anything is written: where (link-time address
/// and file offset), what was there, what will be, and the checks that passed.
public struct FilePatchPlan: Sendable {
    /// The file read.
    public let path: String
    /// The function's name (demangled).
    public let function: String
    public let functionStart: UInt64
    public let functionSize: UInt64
    public let instructionSet: InstructionSet
    /// Where the new bytes go, link time (after a kept `endbr64`/`endbr32`).
    public let address: UInt64
    public let fileOffset: UInt64
    public let action: PatchAction
    /// The `--to` function, in the same file.
    public let target: FileFunction?
    public let originalBytes: [UInt8]
    public let newBytes: [UInt8]
    /// The instructions the new bytes overwrite, whole (data words as `.word`).
    public let originalInstructions: [Instruction]
    /// The new bytes decoded, their literal (the jump's address, a large return value) as `.word`/`.quad`.
    public let newInstructions: [Instruction]
    /// `ldr pc, [pc, #-4]`, `ldr.w pc, [pc, #0]`, `nop; ldr.w pc, [pc, #0]`, `ldr x16, #8; br x16`,
    /// `jmp rel32`, `jmp [rip+0]`, or `return stub`.
    public let encoding: String
    public let keptEndbr: Bool
    public let checks: [String]

    public var range: Range<UInt64> { address..<(address + UInt64(newBytes.count)) }
}

/// Every check of a file patch, and its bytes, for each instruction set: the live planner's checks
/// that do not need a process (instruction boundary, room, no branch into the bytes, a `--to` in the
/// same file and outside the bytes), plus what ARM needs (Thumb's form and alignment, literal pools).
struct FilePatchPlanner {
    let file: ProgramFile
    /// Byte ranges (link time) an earlier graft patch of this file already holds, with their ids.
    var patched: [(id: Int, range: Range<UInt64>)] = []

    func plan(location: String, action: PatchAction) throws -> FilePatchPlan {
        let function = try file.function(named: location)
        let isa = function.instructionSet
        let name = function.name
        var checks: [String] = []
        let kind = file.elf.isPositionIndependent ? "position-independent (ET_DYN)" : "executable (ET_EXEC)"
        checks.append("\(file.path) is an ELF\(file.elf.is64Bit ? 64 : 32) \(file.architecture.rawValue) \(kind) file; \(name) is \(Self.describe(isa)) code" + (isa == .thumb ? " (its symbol has bit 0 set)" : ""))
        guard function.size > 0 else {
            throw GraftError.functionTooShort(function: name, size: 0, needed: Self.minimumLength(isa))
        }
        let start = function.address
        let code = try file.code(at: start, count: Int(function.size), function: name)
        let data = file.dataRanges(in: function.range)
        let (instructions, decodedEnd) = try file.decode(code, at: start, isa: isa, data: data)
        guard let fileOffset = file.elf.fileOffset(forVirtualAddress: start) else {
            throw GraftError.fileRefused(path: file.path, reason: "\(name) at \(hex(start)) has no file offset")
        }
        checks.append("\(name) at \(hex(start)) (file offset \(hex(fileOffset))) is in an executable segment")

        var address = start
        let endbr: [UInt8]? = isa == .x86_64 ? X86_64.endbr64 : isa == .i386 ? [0xf3, 0x0f, 0x1e, 0xfb] : nil
        var keptEndbr = false
        if let endbr, code.starts(with: endbr) {
            address += UInt64(endbr.count)
            keptEndbr = true
            checks.append("\(isa == .x86_64 ? "endbr64" : "endbr32") at the entry is kept; the patch starts after it")
        }
        guard instructions.contains(where: { $0.address == address && !$0.mnemonic.hasPrefix(".") }) else {
            throw GraftError.undecodableInstruction(address: address, function: name)
        }
        checks.append("\(hex(address)) is an instruction boundary (decoded from the start of \(name) in \(Self.describe(isa)) mode)")

        let (newBytes, encoding, target, codeLength) = try encode(action, isa: isa, at: address, function: name, checks: &checks)
        let end = address + UInt64(newBytes.count)
        let available = Int(start + function.size - address)
        guard newBytes.count <= available else {
            throw GraftError.functionTooShort(function: name, size: available, needed: newBytes.count)
        }
        checks.append("\(name) has \(available) bytes from the patch point; the patch needs \(newBytes.count)")

        // An earlier graft patch here: its own literal would look like a literal pool.
        let patchRange = address..<end
        if let earlier = patched.first(where: { $0.range.overlaps(patchRange) }) {
            throw GraftError.fileRefused(path: file.path, reason: "\(name) at \(hex(address)) is already patched by graft (file patch \(earlier.id)); `graft unpatch --file \(file.path) \(earlier.id)` first")
        }
        if !patched.isEmpty { checks.append("no earlier graft patch of this file overlaps \(hex(address))..<\(hex(end))") }

        // Data the function reads inside the bytes (before the decode check: a literal pool does not decode).
        if let datum = data.first(where: { $0.overlaps(patchRange) }) {
            let first = max(datum.lowerBound, address)
            let reader = instructions.first { Self.readAddress($0, isa: isa).map(datum.contains) ?? false }
            throw GraftError.literalInPatch(function: name, data: first, reader: reader.map { "'\($0.text)' at \(hex($0.address))" }, start: address, end: end)
        }
        for instruction in instructions {
            if let read = Self.readAddress(instruction, isa: isa), patchRange.contains(read) {
                throw GraftError.literalInPatch(function: name, data: read, reader: "'\(instruction.text)' at \(hex(instruction.address))", start: address, end: end)
            }
        }
        checks.append(isa == .i386 ? "no data of \(name) lies in \(hex(address))..<\(hex(end)) (i386 code has no pc-relative loads)"
                                   : "no data (literal pool) lies in \(hex(address))..<\(hex(end)), and no pc-relative load of \(name) reads there")
        guard end <= decodedEnd else { throw GraftError.undecodableInstruction(address: decodedEnd, function: name) }

        // No branch of the function may land inside the new bytes (the entry itself is fine).
        for instruction in instructions {
            if let branch = instruction.branchTarget, branch > address, branch < end {
                throw GraftError.branchIntoPatch(from: instruction.address, to: branch, function: name)
            }
        }
        checks.append("no branch in \(name) lands inside \(hex(address))..<\(hex(end))")

        let overwritten = instructions.filter { $0.address < end && $0.end > address }
        if let target {
            let damaged = (keptEndbr ? start : address)..<max(end, overwritten.last?.end ?? end)
            if damaged.contains(target.address) {
                throw GraftError.targetInsidePatch(target: target.name, start: damaged.lowerBound, end: damaged.upperBound)
            }
        }

        let disassembler = try file.disassembler(for: isa)
        var newInstructions = disassembler.decode(Array(newBytes.prefix(codeLength)), at: address)
        if codeLength < newBytes.count {
            let literal = Array(newBytes[codeLength...])
            newInstructions.append(Instruction(address: address + UInt64(codeLength), bytes: literal,
                                               mnemonic: literal.count == 8 ? ".quad" : ".word", operands: hex(littleEndianValue(literal))))
        }
        let original = Array(code[Int(address - start)..<Int(end - start)])
        return FilePatchPlan(path: file.path, function: name, functionStart: start, functionSize: function.size, instructionSet: isa,
                             address: address, fileOffset: fileOffset + (address - start), action: action, target: target,
                             originalBytes: original, newBytes: newBytes, originalInstructions: overwritten,
                             newInstructions: newInstructions, encoding: encoding, keptEndbr: keptEndbr, checks: checks)
    }

    /// The new bytes for `action` at `address`, their encoding's name, the target, and how many of
    /// the bytes are instructions (the rest is a literal word).
    private func encode(_ action: PatchAction, isa: InstructionSet, at address: UInt64, function: String,
                        checks: inout [String]) throws -> ([UInt8], String, FileFunction?, Int) {
        switch action {
        case .returnValue(let value):
            let stub: [UInt8]?
            switch isa {
            case .x86_64: stub = X86_64.returnStub(value)
            case .i386: stub = I386.returnStub(value)
            case .aarch64: stub = AArch64.returnStub(value)
            case .arm: stub = ARM32.returnStub(value)
            case .thumb: stub = Thumb2.returnStub(value)
            }
            guard let stub else {
                throw GraftError.fileRefused(path: file.path, reason: "--return \(value) does not fit the 32-bit register \(isa == .i386 ? "eax" : "r0") that returns an \(isa.rawValue) function's value (-2147483648…4294967295)")
            }
            let codeLength = isa == .aarch64 && stub.count == 16 ? 8 : stub.count
            return (stub, "return stub", nil, codeLength)
        case .jump(let text):
            let target = try file.function(named: text)
            checks.append("the target \(target.name) at \(hex(target.address)) is a function of the same file (\(Self.describe(target.instructionSet)) code)")
            if isa == .arm || isa == .thumb || isa == .aarch64, file.elf.isPositionIndependent {
                return try relativeBranch(isa: isa, at: address, to: target, function: function, checks: &checks)
            }
            switch isa {
            case .x86_64:
                if let rel = X86_64.jumpRel32(from: address, to: target.address) { return (rel, "jmp rel32", target, rel.count) }
                guard !file.elf.isPositionIndependent else {
                    throw GraftError.fileRefused(path: file.path, reason: "\(target.name) is more than 2 GiB from \(function), out of reach of jmp rel32, and an absolute jump would not be relocated in a position-independent file")
                }
                return (X86_64.jumpAbsolute(to: target.address), "jmp [rip+0]", target, 6)
            case .i386:
                return (I386.jumpRel32(from: UInt32(truncatingIfNeeded: address), to: UInt32(truncatingIfNeeded: target.address)), "jmp rel32", target, 5)
            case .aarch64:
                return (AArch64.jumpAbsolute(to: target.entryValue), "ldr x16, #8; br x16", target, 8)
            case .arm:
                return (ARM32.jumpAbsolute(to: UInt32(target.entryValue)), "ldr pc, [pc, #-4]", target, 4)
            case .thumb:
                let bytes = Thumb2.jumpAbsolute(at: UInt32(address), to: UInt32(target.entryValue))
                if bytes.count == 10 {
                    checks.append("\(function) starts at 2 mod 4: a nop goes first so the jump's literal word is aligned")
                }
                return (bytes, bytes.count == 10 ? "nop; ldr.w pc, [pc, #0]" : "ldr.w pc, [pc, #0]", target, bytes.count - 4)
            }
        }
    }

    /// A position-independent file (ET_DYN: a shared library, a PIE) is loaded at an address chosen
    /// at run time, so the absolute address an ARM/AArch64 jump loads would be wrong: a relative
    /// branch instead (`b`, `b.w`), which cannot switch between A32 and Thumb.
    private func relativeBranch(isa: InstructionSet, at address: UInt64, to target: FileFunction, function: String,
                                checks: inout [String]) throws -> ([UInt8], String, FileFunction?, Int) {
        guard target.instructionSet == isa else {
            throw GraftError.fileRefused(path: file.path, reason: "it is position-independent (ET_DYN), so \(function) can only branch relatively (the absolute address an ldr pc would load is not relocated), and a relative branch cannot switch from \(Self.describe(isa)) to \(target.name)'s \(Self.describe(target.instructionSet)) code")
        }
        let bytes: [UInt8]?
        let name: String
        switch isa {
        case .aarch64: (bytes, name) = (AArch64.branch(from: address, to: target.address), "b (imm26)")
        case .arm: (bytes, name) = (ARM32.branch(from: UInt32(address), to: UInt32(target.address)), "b (imm24)")
        default: (bytes, name) = (Thumb2.branch(from: UInt32(address), to: UInt32(target.address)), "b.w (imm24)")
        }
        guard let bytes else {
            throw GraftError.fileRefused(path: file.path, reason: "\(target.name) is out of reach of a relative branch from \(function), and the file is position-independent (an absolute jump would not be relocated)")
        }
        checks.append("the file is position-independent (ET_DYN): a relative branch, which needs no relocation")
        return (bytes, name, target, bytes.count)
    }

    /// The address an instruction reads relative to the pc: ARM/AArch64 literal loads and `adr`,
    /// x86_64 rip-relative operands (the instruction's end + its disp32).
    static func readAddress(_ instruction: Instruction, isa: InstructionSet) -> UInt64? {
        if let address = instruction.pcRelativeAddress { return address }
        guard isa == .x86_64, let offset = instruction.ripDisplacementOffset, offset + 4 <= instruction.bytes.count else { return nil }
        let displacement = Int64(readLittleEndianInt32(instruction.bytes, at: offset))
        return UInt64(bitPattern: Int64(bitPattern: instruction.end) &+ displacement)
    }

    static func describe(_ isa: InstructionSet) -> String {
        switch isa {
        case .x86_64: return "x86_64"
        case .i386: return "i386"
        case .aarch64: return "AArch64 (A64)"
        case .arm: return "ARM (A32)"
        case .thumb: return "Thumb-2 (T32)"
        }
    }

    /// The shortest patch of the instruction set (a return stub), for a function of size 0.
    static func minimumLength(_ isa: InstructionSet) -> Int {
        switch isa {
        case .x86_64, .i386: return 3
        case .aarch64, .arm: return 8
        case .thumb: return 4
        }
    }
}
