import CCapstone
import GraftCore

/// A capstone handle (`cs_open` + `CS_OPT_DETAIL`) for one architecture, turning bytes into
/// `Instruction` values. Not Sendable: a capstone handle and its instruction buffer belong to one
/// thread at a time; make one per task. The handle is closed (`cs_close`) in deinit.
public final class Disassembler {
    public let architecture: Architecture
    /// arm32 only: decodes Thumb (T32, Thumb-2 included) rather than A32.
    public let isThumb: Bool
    private var handle: csh = 0
    /// One instruction buffer with room for detail, reused by every `cs_disasm_iter` call.
    private let buffer: UnsafeMutablePointer<cs_insn>

    /// Opens capstone for `arch`: x86_64 → CS_ARCH_X86/CS_MODE_64, i386 → CS_MODE_32,
    /// aarch64 → CS_ARCH_ARM64 little-endian, arm32 → CS_ARCH_ARM/CS_MODE_ARM (A32), or CS_MODE_THUMB
    /// with `thumb` (ignored for the other architectures).
    /// Throws `GraftError.usage("capstone: …")` if capstone cannot open it.
    public init(_ arch: Architecture, thumb: Bool = false) throws {
        architecture = arch
        isThumb = arch == .arm32 && thumb
        let (csArch, csMode): (cs_arch, cs_mode) = switch arch {
        case .x86_64: (CS_ARCH_X86, CS_MODE_64)
        case .i386: (CS_ARCH_X86, CS_MODE_32)
        case .aarch64: (CS_ARCH_ARM64, CS_MODE_LITTLE_ENDIAN)
        case .arm32: (CS_ARCH_ARM, thumb ? CS_MODE_THUMB : CS_MODE_ARM)
        }
        var h: csh = 0
        let err = cs_open(csArch, csMode, &h)
        guard err == CS_ERR_OK else {
            throw GraftError.usage("capstone: cannot open a \(isThumb ? "thumb" : arch.rawValue) disassembler: \(String(cString: cs_strerror(err)))")
        }
        let detailErr = cs_option(h, CS_OPT_DETAIL, Int(CS_OPT_ON.rawValue))
        guard detailErr == CS_ERR_OK, let insn = cs_malloc(h) else {
            cs_close(&h)
            let reason = detailErr == CS_ERR_OK ? "out of memory" : String(cString: cs_strerror(detailErr))
            throw GraftError.usage("capstone: cannot set up a \(arch.rawValue) disassembler: \(reason)")
        }
        handle = h
        buffer = insn
    }

    deinit {
        cs_free(buffer, 1)
        cs_close(&handle)
    }

    /// Decodes `bytes`, the first at `address`, until the bytes run out, `maxCount` instructions
    /// (0: no limit) are decoded, or a byte sequence does not decode — decoding stops there, so the
    /// next undecoded address is `result.last?.end ?? address`.
    public func decode(_ bytes: [UInt8], at address: UInt64, maxCount: Int = 0) -> [Instruction] {
        var result: [Instruction] = []
        bytes.withUnsafeBufferPointer { all in
            guard let base = all.baseAddress else { return }
            var offset = 0
            while offset < all.count, maxCount <= 0 || result.count < maxCount {
                let pc = address &+ UInt64(offset)
                // endbr64 is recognised by its bytes: capstone builds before 4.0.2's CET support decode
                // f3 0f 1e fa as something else or not at all; Debian's 4.0.2 does decode it.
                if isX86, all.count - offset >= 4, Array(all[offset..<offset + 4]) == X86_64.endbr64 {
                    result.append(Instruction(address: pc, bytes: X86_64.endbr64, mnemonic: "endbr64",
                                              operands: "", isEndbr64: true))
                    offset += 4
                    continue
                }
                var code: UnsafePointer<UInt8>? = base + offset
                var remaining = all.count - offset
                var next = pc
                guard cs_disasm_iter(handle, &code, &remaining, &next, buffer) else { break }
                let size = Int(buffer.pointee.size)
                let encoding = Array(all[offset..<offset + size])
                result.append(makeInstruction(buffer, address: pc, bytes: encoding))
                offset += size
            }
        }
        return result
    }

    /// The one instruction at the start of `bytes`, nil if it does not decode.
    public func decodeOne(_ bytes: [UInt8], at address: UInt64) -> Instruction? {
        decode(bytes, at: address, maxCount: 1).first
    }

    private var isX86: Bool { architecture == .x86_64 || architecture == .i386 }

    private func makeInstruction(_ insn: UnsafePointer<cs_insn>, address: UInt64, bytes: [UInt8]) -> Instruction {
        let mnemonic = String(cString: graft_cs_mnemonic(insn))
        let operands = String(cString: graft_cs_op_str(insn))
        switch architecture {
        case .arm32: return makeARMInstruction(insn, address: address, bytes: bytes, mnemonic: mnemonic, operands: operands)
        case .aarch64: return makeAArch64Instruction(insn, address: address, bytes: bytes, mnemonic: mnemonic, operands: operands)
        case .x86_64, .i386: break
        }
        let id = insn.pointee.id
        func isID(_ ins: x86_insn) -> Bool { id == ins.rawValue }
        func inGroup(_ group: cs_group_type) -> Bool { cs_insn_group(handle, insn, UInt32(group.rawValue)) }

        let isFar = isID(X86_INS_LJMP) || isID(X86_INS_LCALL)
        let isCall = inGroup(CS_GRP_CALL)
        let isReturn = inGroup(CS_GRP_RET) || inGroup(CS_GRP_IRET)
        // capstone 4 puts jmp *and* jcc in CS_GRP_JUMP, and loop/loope/loopne only in
        // CS_GRP_BRANCH_RELATIVE: tell them apart by instruction id.
        let isJump = isID(X86_INS_JMP) || isID(X86_INS_LJMP)
        let isLoop = isID(X86_INS_LOOP) || isID(X86_INS_LOOPE) || isID(X86_INS_LOOPNE)
        let isConditional = !isJump && !isCall && (inGroup(CS_GRP_JUMP) || isLoop)

        let count = Int(graft_cs_x86_op_count(insn))
        var branchTarget: UInt64?
        if (isJump || isCall || isConditional), !isFar, count == 1, graft_cs_x86_op_type(insn, 0) == X86_OP_IMM {
            let target = UInt64(bitPattern: graft_cs_x86_op_imm(insn, 0))
            branchTarget = architecture == .i386 ? target & 0xffff_ffff : target
        }
        var ripRelative = false
        for index in 0..<count where graft_cs_x86_op_type(insn, Int32(index)) == X86_OP_MEM {
            let base = graft_cs_x86_op_mem_base(insn, Int32(index))
            if base == X86_REG_RIP || base == X86_REG_EIP { ripRelative = true }
        }
        let isInterrupt = isID(X86_INS_INT3) || isID(X86_INS_INT) || isID(X86_INS_INT1) || isID(X86_INS_INTO)
        let isInt80 = isID(X86_INS_INT) && count == 1 && graft_cs_x86_op_imm(insn, 0) == 0x80
        let isSyscall = isID(X86_INS_SYSCALL) || isID(X86_INS_SYSENTER) || isInt80
        // Prefix slot 0 holds f2/f3 for rep/repne, but also for `bnd jmp` (f2) and xacquire/xrelease;
        // mandatory SSE prefixes (movss) are not reported there. capstone names real rep forms "rep…".
        let prefix0 = graft_cs_x86_prefix(insn, 0)
        let hasRep = (prefix0 == 0xf2 || prefix0 == 0xf3) && mnemonic.hasPrefix("rep")

        return Instruction(address: address, bytes: bytes, mnemonic: mnemonic, operands: operands,
                           isCall: isCall, isReturn: isReturn, isJump: isJump,
                           isConditionalBranch: isConditional, branchTarget: branchTarget,
                           isRIPRelative: ripRelative, isEndbr64: bytes == X86_64.endbr64,
                           isSyscall: isSyscall, isInterrupt: isInterrupt, hasRepPrefix: hasRep,
                           ripDisplacementOffset: ripRelative && graft_cs_x86_disp_size(insn) == 4
                               ? Int(graft_cs_x86_disp_offset(insn)) : nil)
    }
}

extension Disassembler {
    /// A32/T32: branches (b, bl, blx, cbz, cbnz) with their absolute targets, and the address a
    /// pc-relative operand reads (`ldr r0, [pc, #8]`, `vldr`, `ldrd`, `adr`/`add rX, pc, #n`). The pc reads
    /// as the instruction + 8 in A32 and as (the instruction + 4) rounded down to 4 in T32 for these.
    private func makeARMInstruction(_ insn: UnsafePointer<cs_insn>, address: UInt64, bytes: [UInt8],
                                    mnemonic: String, operands: String) -> Instruction {
        let id = insn.pointee.id
        func isID(_ ins: arm_insn) -> Bool { id == ins.rawValue }
        let count = Int(graft_cs_arm_op_count(insn))
        let always = graft_cs_arm_cc(insn) == ARM_CC_AL || graft_cs_arm_cc(insn) == ARM_CC_INVALID
        let isCall = isID(ARM_INS_BL) || isID(ARM_INS_BLX)
        let isBranch = isID(ARM_INS_B) || isCall || isID(ARM_INS_CBZ) || isID(ARM_INS_CBNZ)
        var branchTarget: UInt64?
        if isBranch, count > 0, graft_cs_arm_op_type(insn, Int32(count - 1)) == ARM_OP_IMM {
            branchTarget = UInt64(UInt32(bitPattern: graft_cs_arm_op_imm(insn, Int32(count - 1))))
        }
        let pc = isThumb ? (address + 4) & ~3 : address + 8
        var dataAddress: UInt64?
        for index in 0..<count {
            let i = Int32(index)
            switch graft_cs_arm_op_type(insn, i) {
            case ARM_OP_MEM where graft_cs_arm_op_mem_base(insn, i) == ARM_REG_PC && graft_cs_arm_op_mem_index(insn, i) == ARM_REG_INVALID:
                let displacement = Int64(graft_cs_arm_op_mem_disp(insn, i))
                dataAddress = UInt64(bitPattern: Int64(pc) &+ (graft_cs_arm_op_subtracted(insn, i) ? -abs(displacement) : displacement)) & 0xffff_ffff
            case ARM_OP_REG where graft_cs_arm_op_reg(insn, i) == ARM_REG_PC && index == 1 && isID(ARM_INS_ADD) && count == 3
                && graft_cs_arm_op_type(insn, 2) == ARM_OP_IMM:
                dataAddress = (pc &+ UInt64(UInt32(bitPattern: graft_cs_arm_op_imm(insn, 2)))) & 0xffff_ffff
            case ARM_OP_IMM where isID(ARM_INS_ADR) && index == count - 1:
                dataAddress = (pc &+ UInt64(UInt32(bitPattern: graft_cs_arm_op_imm(insn, i)))) & 0xffff_ffff
            default: break
            }
        }
        let isReturn = (isID(ARM_INS_BX) && operands == "lr")
            || ((isID(ARM_INS_POP) || isID(ARM_INS_LDM)) && operands.hasSuffix("pc}"))
        return Instruction(address: address, bytes: bytes, mnemonic: mnemonic, operands: operands,
                           isCall: isCall, isReturn: isReturn, isJump: isID(ARM_INS_B) && always,
                           isConditionalBranch: (isID(ARM_INS_B) && !always) || isID(ARM_INS_CBZ) || isID(ARM_INS_CBNZ),
                           branchTarget: branchTarget, pcRelativeAddress: dataAddress)
    }

    /// A64: branches (b, b.cond, bl, cbz, cbnz, tbz, tbnz) with their targets, and the address a literal
    /// load (`ldr x0, #lit`, `ldrsw`, `prfm`) or `adr` reads; `adrp` names a page, not data.
    private func makeAArch64Instruction(_ insn: UnsafePointer<cs_insn>, address: UInt64, bytes: [UInt8],
                                        mnemonic: String, operands: String) -> Instruction {
        let id = insn.pointee.id
        func isID(_ ins: arm64_insn) -> Bool { id == ins.rawValue }
        let count = Int(graft_cs_arm64_op_count(insn))
        let lastIsImmediate = count > 0 && graft_cs_arm64_op_type(insn, Int32(count - 1)) == ARM64_OP_IMM
        let last = lastIsImmediate ? UInt64(bitPattern: graft_cs_arm64_op_imm(insn, Int32(count - 1))) : nil
        let conditional = (isID(ARM64_INS_B) && graft_cs_arm64_cc(insn) != ARM64_CC_INVALID && graft_cs_arm64_cc(insn) != ARM64_CC_AL)
            || isID(ARM64_INS_CBZ) || isID(ARM64_INS_CBNZ) || isID(ARM64_INS_TBZ) || isID(ARM64_INS_TBNZ)
        let isBranch = isID(ARM64_INS_B) || isID(ARM64_INS_BL) || conditional
        let isLiteral = (isID(ARM64_INS_LDR) || isID(ARM64_INS_LDRSW) || isID(ARM64_INS_PRFM) || isID(ARM64_INS_ADR)) && count == 2
        return Instruction(address: address, bytes: bytes, mnemonic: mnemonic, operands: operands,
                           isCall: isID(ARM64_INS_BL) || isID(ARM64_INS_BLR), isReturn: isID(ARM64_INS_RET),
                           isJump: isID(ARM64_INS_B) && !conditional, isConditionalBranch: conditional,
                           branchTarget: isBranch ? last : nil, pcRelativeAddress: isLiteral ? last : nil)
    }
}

/// A capstone handle must not cross threads unsynchronised.
@available(*, unavailable)
extension Disassembler: Sendable {}
