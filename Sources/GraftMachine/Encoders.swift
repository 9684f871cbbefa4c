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
}
