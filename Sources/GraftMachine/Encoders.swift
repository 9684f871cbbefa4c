// Pure instruction encoders: addresses in, bytes (memory order) out. Each is tested with golden bytes
// and by disassembling its output with capstone (Tests/GraftMachineTests).

/// x86-64 encodings.
public enum X86_64 {
    /// `endbr64`, the CET landing pad compilers put at function entries (`-fcf-protection`).
    public static let endbr64: [UInt8] = [0xf3, 0x0f, 0x1e, 0xfa]
    /// `int3`, the one-byte breakpoint.
    public static let int3: UInt8 = 0xcc
    /// `jmp rel32` is 5 bytes.
    public static let rel32JumpLength = 5
    /// `jmp [rip+0]` + 8-byte address is 14 bytes.
    public static let absoluteJumpLength = 14

    /// `jmp rel32` (e9 + LE displacement) placed at `from`, landing on `to`; nil when the displacement
    /// `to - (from + 5)` does not fit a signed 32-bit integer (the target is more than ±2 GiB away).
    public static func jumpRel32(from: UInt64, to: UInt64) -> [UInt8]? {
        // rip arithmetic wraps modulo 2^64, so the wrapping difference read as signed is the displacement.
        let displacement = Int64(bitPattern: to &- (from &+ UInt64(rel32JumpLength)))
        guard let rel = Int32(exactly: displacement) else { return nil }
        return [0xe9] + littleEndian(rel)
    }

    /// `jmp qword ptr [rip+0]` (ff 25 00000000) followed by the 8-byte LE target: reaches any address and
    /// clobbers no register (funchook/frida's absolute jump).
    public static func jumpAbsolute(to: UInt64) -> [UInt8] {
        [0xff, 0x25, 0x00, 0x00, 0x00, 0x00] + littleEndian(to)
    }

    /// The shortest jump from `from` to `to`: `jumpRel32` when it reaches, else `jumpAbsolute`.
    public static func jump(from: UInt64, to: UInt64) -> [UInt8] {
        jumpRel32(from: from, to: to) ?? jumpAbsolute(to: to)
    }

    /// The shortest `mov eax/rax, imm; ret` leaving exactly `value` in the full 64-bit rax:
    /// 0 → `xor eax, eax; ret` (31 c0 c3); 1…0xffffffff → `mov eax, imm32; ret` (b8, zero-extends);
    /// Int32.min…-1 → `mov rax, simm32; ret` (48 c7 c0, sign-extends); otherwise `movabs rax, imm64; ret`.
    public static func returnStub(_ value: Int64) -> [UInt8] {
        let ret: UInt8 = 0xc3
        if value == 0 { return [0x31, 0xc0, ret] }
        if value > 0, let imm = UInt32(exactly: value) { return [0xb8] + littleEndian(imm) + [ret] }
        if value < 0, let imm = Int32(exactly: value) { return [0x48, 0xc7, 0xc0] + littleEndian(imm) + [ret] }
        return [0x48, 0xb8] + littleEndian(value) + [ret]
    }
}

/// AArch64 (A64) encodings.
public enum AArch64 {
    /// `ldr x16, #8; br x16; .quad target` is 16 bytes.
    public static let absoluteJumpLength = 16

    /// `LDR X16, #8` (0x58000050), `BR X16` (0xd61f0200), then the 8-byte LE target: reaches any address.
    /// Clobbers x16 (IP0), which the AAPCS64 reserves for exactly this (veneers, PLT stubs).
    public static func jumpAbsolute(to: UInt64) -> [UInt8] {
        littleEndian(UInt32(0x5800_0050)) + littleEndian(UInt32(0xd61f_0200)) + littleEndian(to)
    }

    /// `b target` (imm26): 4 bytes, position-independent, within ±128 MiB; nil out of reach or unaligned.
    public static func branch(from: UInt64, to: UInt64) -> [UInt8]? {
        let offset = Int64(bitPattern: to &- from)
        guard offset % 4 == 0, offset >= -(1 << 27), offset < 1 << 27 else { return nil }
        return littleEndian(UInt32(0x1400_0000) | UInt32(truncatingIfNeeded: offset >> 2) & 0x03ff_ffff)
    }

    /// `mov x0, #N; ret` leaving exactly `value` in x0 (and its low half in w0): `movz` for 0…0xffff,
    /// `movn` for -0x10000…-1, else `ldr x0, #8; ret; .quad N` (16 bytes).
    public static func returnStub(_ value: Int64) -> [UInt8] {
        let ret = littleEndian(UInt32(0xd65f_03c0))
        if value >= 0, value <= 0xffff { return littleEndian(UInt32(0xd280_0000) | UInt32(value) << 5) + ret }
        if value < 0, value >= -0x10000 { return littleEndian(UInt32(0x9280_0000) | UInt32(~value & 0xffff) << 5) + ret }
        return littleEndian(UInt32(0x5800_0040)) + ret + littleEndian(value)
    }
}

/// ARM32 (A32, not Thumb) encodings.
public enum ARM32 {
    /// `ldr pc, [pc, #-4]; .word target` is 8 bytes.
    public static let absoluteJumpLength = 8

    /// `LDR PC, [PC, #-4]` (0xe51ff004; pc reads as this instruction + 8, so it loads the next word),
    /// then the 4-byte LE target. Clobbers no register. The target must be A32 code: bit 0 set would
    /// switch to Thumb (interworking load).
    public static func jumpAbsolute(to: UInt32) -> [UInt8] {
        littleEndian(UInt32(0xe51f_f004)) + littleEndian(to)
    }

    /// `bx lr`.
    public static let returnInstruction = littleEndian(UInt32(0xe12f_ff1e))

    /// `b target` (imm24; the pc reads as the instruction + 8): 4 bytes, position-independent, within
    /// ±32 MiB, A32 to A32 only (B does not change state); nil out of reach or unaligned.
    public static func branch(from: UInt32, to: UInt32) -> [UInt8]? {
        let offset = Int64(to) - Int64(from) - 8
        guard offset % 4 == 0, offset >= -(1 << 25), offset < 1 << 25 else { return nil }
        return littleEndian(UInt32(0xea00_0000) | UInt32(truncatingIfNeeded: offset >> 2) & 0x00ff_ffff)
    }

    /// `mov r0, #N; bx lr` for `value` as a 32-bit register (a C int or unsigned; nil beyond 32 bits):
    /// `mov`/`mvn` with a rotated 8-bit immediate when one encodes it, else `movw r0, #lo` (+ `movt r0, #hi`,
    /// ARMv7). 8 to 12 bytes.
    public static func returnStub(_ value: Int64) -> [UInt8]? {
        guard let word = register32(value) else { return nil }
        if let immediate = modifiedImmediate(word) { return littleEndian(0xe3a0_0000 | immediate) + returnInstruction }
        if let immediate = modifiedImmediate(~word) { return littleEndian(0xe3e0_0000 | immediate) + returnInstruction }
        func wide(_ opcode: UInt32, _ half: UInt32) -> [UInt8] { littleEndian(opcode | (half >> 12) << 16 | (half & 0xfff)) }
        let low = wide(0xe300_0000, word & 0xffff)
        return word >> 16 == 0 ? low + returnInstruction : low + wide(0xe340_0000, word >> 16) + returnInstruction
    }

    /// The 12-bit A32 "modified immediate" (rotation << 8 | imm8, the value being imm8 rotated right by
    /// twice the rotation) that encodes `value`, nil when none does.
    static func modifiedImmediate(_ value: UInt32) -> UInt32? {
        for rotation in 0..<16 {
            let imm8 = value.rotatedLeft(by: 2 * rotation)
            if imm8 <= 0xff { return UInt32(rotation) << 8 | imm8 }
        }
        return nil
    }
}

/// Thumb-2 (T32) encodings, for functions whose symbol has bit 0 set.
public enum Thumb2 {
    /// `ldr.w pc, [pc, #0]` (f8df f000): loads the word at (this instruction + 4) rounded down to 4.
    public static let loadPC: [UInt8] = [0xdf, 0xf8, 0x00, 0xf0]
    /// The 16-bit `nop` (bf00).
    public static let nop: [UInt8] = [0x00, 0xbf]
    /// `bx lr`.
    public static let returnInstruction: [UInt8] = [0x70, 0x47]

    /// `ldr.w pc, [pc, #0]; .word target` at `address`: 8 bytes when `address` is a multiple of 4. At
    /// 2 mod 4 the word the load reads would overlap the instruction, so a `nop` goes first and the
    /// word lands aligned: 10 bytes. The load interworks: `target` with bit 0 set stays in Thumb, even
    /// switches to A32.
    public static func jumpAbsolute(at address: UInt32, to target: UInt32) -> [UInt8] {
        (address % 4 == 0 ? [] : nop) + loadPC + littleEndian(target)
    }

    /// `b.w target` (T4; the pc reads as the instruction + 4): 4 bytes, position-independent, within
    /// ±16 MiB, Thumb to Thumb only; nil out of reach or odd.
    public static func branch(from: UInt32, to: UInt32) -> [UInt8]? {
        let offset = Int64(to & ~1) - Int64(from) - 4
        guard offset % 2 == 0, offset >= -(1 << 24), offset < 1 << 24 else { return nil }
        let value = UInt32(truncatingIfNeeded: offset)
        let sign = (value >> 24) & 1, i1 = (value >> 23) & 1, i2 = (value >> 22) & 1
        let j1 = ~(i1 ^ sign) & 1, j2 = ~(i2 ^ sign) & 1
        let first = UInt16(0xf000 | sign << 10 | (value >> 12) & 0x3ff)
        let second = UInt16(0x9000 | j1 << 13 | j2 << 11 | (value >> 1) & 0x7ff)
        return littleEndian(first) + littleEndian(second)
    }

    /// The jump's length at `address` (8, or 10 at 2 mod 4).
    public static func jumpLength(at address: UInt32) -> Int { address % 4 == 0 ? 8 : 10 }

    /// `mov r0, #N; bx lr` for `value` as a 32-bit register (nil beyond 32 bits): `movs r0, #imm8` for
    /// 0…255 (4 bytes; the flags it sets are not preserved across calls), else `movw r0, #lo`
    /// (+ `movt r0, #hi`).
    public static func returnStub(_ value: Int64) -> [UInt8]? {
        guard let word = register32(value) else { return nil }
        if word <= 0xff { return littleEndian(UInt16(0x2000) | UInt16(word)) + returnInstruction }
        func wide(_ opcode: UInt16, _ half: UInt32) -> [UInt8] {
            let first = opcode | UInt16((half >> 11) & 1) << 10 | UInt16(half >> 12)
            let second = UInt16((half >> 8) & 7) << 12 | UInt16(half & 0xff)   // Rd = r0
            return littleEndian(first) + littleEndian(second)
        }
        let low = wide(0xf240, word & 0xffff)
        return word >> 16 == 0 ? low + returnInstruction : low + wide(0xf2c0, word >> 16) + returnInstruction
    }
}

/// `value` as the 32 bits of a register: an Int32 or a UInt32; nil beyond.
func register32(_ value: Int64) -> UInt32? {
    if let signed = Int32(exactly: value) { return UInt32(bitPattern: signed) }
    return UInt32(exactly: value)
}

extension UInt32 {
    func rotatedLeft(by count: Int) -> UInt32 {
        let n = UInt32(count & 31)
        return n == 0 ? self : self << n | self >> (32 - n)
    }
}

/// i386 encodings.
public enum I386 {
    /// `jmp rel32` is 5 bytes.
    public static let rel32JumpLength = 5
    /// `push imm32; ret` is 6 bytes.
    public static let pushReturnLength = 6

    /// `jmp rel32` (e9 + LE displacement) at `from` landing on `to`. eip arithmetic wraps modulo 2^32,
    /// so every target is reachable.
    public static func jumpRel32(from: UInt32, to: UInt32) -> [UInt8] {
        [0xe9] + littleEndian(to &- (from &+ UInt32(rel32JumpLength)))
    }

    /// `push imm32; ret` (68 imm32 c3): an absolute jump that uses one stack slot and no register.
    public static func pushReturn(to: UInt32) -> [UInt8] {
        [0x68] + littleEndian(to) + [0xc3]
    }

    /// `mov eax, imm32; ret` (0: `xor eax, eax; ret`) for `value` as a 32-bit register; nil beyond.
    public static func returnStub(_ value: Int64) -> [UInt8]? {
        guard let word = register32(value) else { return nil }
        return word == 0 ? [0x31, 0xc0, 0xc3] : [0xb8] + littleEndian(word) + [0xc3]
    }
}
