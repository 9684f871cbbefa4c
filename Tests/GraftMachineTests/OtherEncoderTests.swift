import Testing
import GraftMachine

@Suite struct AArch64EncoderTests {
    @Test func jumpAbsoluteGolden() {
        #expect(AArch64.jumpAbsolute(to: 0x0000_ffff_b7e1_2340) == [
            0x50, 0x00, 0x00, 0x58,  // ldr x16, #8
            0x00, 0x02, 0x1f, 0xd6,  // br x16
            0x40, 0x23, 0xe1, 0xb7, 0xff, 0xff, 0x00, 0x00,
        ])
        #expect(AArch64.jumpAbsolute(to: 0x0102_0304_0506_0708).suffix(8) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(AArch64.jumpAbsolute(to: 0).count == AArch64.absoluteJumpLength)
        #expect(AArch64.absoluteJumpLength == 16)
    }

    @Test(arguments: [(UInt64(0), "ldr x16, #8"), (0x40_1000, "ldr x16, #0x401008")])
    func jumpAbsoluteDecodes(address: UInt64, literal: String) throws {
        let dis = try Disassembler(.aarch64)
        let bytes = AArch64.jumpAbsolute(to: 0xffff_b7e1_2340)
        let insns = dis.decode(bytes, at: address, maxCount: 2)
        #expect(insns.map(\.text) == [literal, "br x16"])
        #expect(insns.map(\.size) == [4, 4])
        #expect(insns.last?.end == address + 8)   // where the literal lives
    }
}

@Suite struct ARM32EncoderTests {
    @Test func jumpAbsoluteGolden() {
        #expect(ARM32.jumpAbsolute(to: 0xb6f1_2344) == [0x04, 0xf0, 0x1f, 0xe5, 0x44, 0x23, 0xf1, 0xb6])
        #expect(ARM32.jumpAbsolute(to: 0) == [0x04, 0xf0, 0x1f, 0xe5, 0, 0, 0, 0])
        #expect(ARM32.absoluteJumpLength == 8)
    }

    @Test func jumpAbsoluteDecodes() throws {
        let dis = try Disassembler(.arm32)
        let insn = try #require(dis.decodeOne(ARM32.jumpAbsolute(to: 0x0001_0400), at: 0x8000))
        #expect(insn.text == "ldr pc, [pc, #-4]")
        #expect(insn.mnemonic == "ldr")
        #expect(insn.size == 4)
    }
}

@Suite struct I386EncoderTests {
    @Test func jumpRel32Golden() {
        #expect(I386.jumpRel32(from: 0x0804_8000, to: 0x0804_8100) == [0xe9, 0xfb, 0x00, 0x00, 0x00])
        #expect(I386.jumpRel32(from: 0x0804_8000, to: 0x0804_8000) == [0xe9, 0xfb, 0xff, 0xff, 0xff])
        #expect(I386.jumpRel32(from: 0xf7f0_0000, to: 0x0804_8000) == [0xe9, 0xfb, 0x7f, 0x14, 0x10])
        // Wraps modulo 2^32 in both directions: every target is reachable.
        #expect(I386.jumpRel32(from: 0xffff_fff0, to: 0x10) == [0xe9, 0x1b, 0x00, 0x00, 0x00])
        #expect(I386.jumpRel32(from: 0x10, to: 0xffff_fff0) == [0xe9, 0xdb, 0xff, 0xff, 0xff])
        #expect(I386.jumpRel32(from: 0, to: 0x8000_0004) == [0xe9, 0xff, 0xff, 0xff, 0x7f])
        #expect(I386.jumpRel32(from: 0, to: 0x8000_0005) == [0xe9, 0x00, 0x00, 0x00, 0x80])
    }

    @Test func pushReturnGolden() {
        #expect(I386.pushReturn(to: 0x0804_8123) == [0x68, 0x23, 0x81, 0x04, 0x08, 0xc3])
        #expect(I386.pushReturn(to: 0xffff_ffff) == [0x68, 0xff, 0xff, 0xff, 0xff, 0xc3])
        #expect(I386.pushReturnLength == 6)
    }

    static let jumpCases: [(UInt32, UInt32)] = [
        (0x0804_8000, 0x0804_8100), (0x0804_8000, 0x0804_8000), (0xf7f0_0000, 0x0804_8000),
        (0xffff_fff0, 0x10), (0x10, 0xffff_fff0), (0, 0x8000_0004), (0, 0x8000_0005),
    ]

    @Test(arguments: jumpCases)
    func jumpRel32Decodes(from: UInt32, to: UInt32) throws {
        let dis = try Disassembler(.i386)
        let insn = try #require(dis.decodeOne(I386.jumpRel32(from: from, to: to), at: UInt64(from)))
        #expect(insn.mnemonic == "jmp")
        #expect(insn.isJump)
        #expect(insn.size == 5)
        #expect(insn.branchTarget == UInt64(to))
    }

    @Test(arguments: [(UInt32(0x0804_8123), "push 0x8048123"), (0xffff_ffff, "push 0xffffffff"), (0, "push 0")])
    func pushReturnDecodes(to: UInt32, push: String) throws {
        let dis = try Disassembler(.i386)
        let insns = dis.decode(I386.pushReturn(to: to), at: 0x0804_8000)
        #expect(insns.map(\.text) == [push, "ret"])
        #expect(insns.map(\.size) == [5, 1])
        #expect(insns.last?.isReturn == true)
        #expect(insns.first?.isJump == false)
    }
}
