/// A CPU architecture graft knows how to patch, as data (Delve's `Arch`): the breakpoint instruction,
/// whether a trap moves the program counter past it, pointer and instruction sizes.
/// Every case is compiled and tested on every host; nothing here depends on the machine graft runs on.
public enum Architecture: String, Sendable, CaseIterable {
    case x86_64, aarch64, arm32, i386

    /// The architecture this copy of graft was compiled for, nil on an architecture graft cannot patch.
    public static var host: Architecture? {
        #if arch(x86_64)
        return .x86_64
        #elseif arch(arm64)
        return .aarch64
        #elseif arch(arm)
        return .arm32
        #elseif arch(i386)
        return .i386
        #else
        return nil
        #endif
    }

    /// The software breakpoint the kernel reports as SIGTRAP, in memory order.
    /// x86: `int3` (0xcc). aarch64: `BRK #0` (0xd4200000). arm32: the undefined instruction Linux
    /// reserves for ptrace breakpoints (0xe7f001f0, `arch/arm/kernel/ptrace.c` BREAKINST_ARM).
    public var breakpoint: [UInt8] {
        switch self {
        case .x86_64, .i386: return [X86_64.int3]
        case .aarch64: return littleEndian(UInt32(0xd420_0000))
        case .arm32: return littleEndian(UInt32(0xe7f0_01f0))
        }
    }

    /// Whether a breakpoint trap leaves the program counter after the breakpoint.
    /// The quirk, by name: "a trap leaves rip = bp+1" on x86 (int3 is a trap, not a fault), so the
    /// tracer rewinds the pc by `breakpoint.count`; on arm the pc stays on the breakpoint.
    public var trapAdvancesPC: Bool {
        switch self {
        case .x86_64, .i386: return true
        case .aarch64, .arm32: return false
        }
    }

    /// Bytes in a pointer (and in a general-purpose register).
    public var pointerSize: Int {
        switch self {
        case .x86_64, .aarch64: return 8
        case .arm32, .i386: return 4
        }
    }

    /// The longest instruction the architecture allows: 15 bytes on x86, 4 on arm (A32/A64, not Thumb).
    public var maxInstructionLength: Int {
        switch self {
        case .x86_64, .i386: return 15
        case .aarch64, .arm32: return 4
        }
    }

    /// Length of the jump graft writes when the target may be anywhere in the address space
    /// (`X86_64.jumpAbsolute`, `AArch64.jumpAbsolute`, `ARM32.jumpAbsolute`, `I386.jumpRel32`).
    public var absoluteJumpLength: Int {
        switch self {
        case .x86_64: return X86_64.absoluteJumpLength
        case .aarch64: return AArch64.absoluteJumpLength
        case .arm32: return ARM32.absoluteJumpLength
        case .i386: return I386.rel32JumpLength
        }
    }
}

/// The signed 32-bit little-endian value at `bytes[offset..<offset+4]` (a rel32 or disp32 field).
public func readLittleEndianInt32(_ bytes: [UInt8], at offset: Int) -> Int32 {
    let raw = UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    return Int32(bitPattern: raw)
}

/// The little-endian 64-bit word at `offset` of `bytes` (a GOT slot, a vtable entry, a stack word).
public func readLittleEndianUInt64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
    (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
}

/// `bytes` (at most 8) read as one little-endian unsigned value: a literal word of 4 or 8 bytes.
public func littleEndianValue(_ bytes: [UInt8]) -> UInt64 {
    bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
}

/// `value` as little-endian bytes, the byte order of every architecture graft supports.
@inlinable
public func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    let le = value.littleEndian
    return withUnsafeBytes(of: le) { Array($0) }
}
