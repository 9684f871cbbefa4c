import Testing
import GraftMachine

// The encodings `graft patch --file` writes on ARM, Thumb-2, AArch64 and i386: golden bytes, and
// capstone's reading of them (what the patch's output shows and what the CPU will run).

@Suite struct Thumb2EncoderTests {
    @Test func jumpAbsoluteAligned() throws {
        let bytes = Thumb2.jumpAbsolute(at: 0x1_0460, to: 0x1_0491)
        #expect(bytes == [0xdf, 0xf8, 0x00, 0xf0, 0x91, 0x04, 0x01, 0x00])
        #expect(Thumb2.jumpLength(at: 0x1_0460) == 8)
        let dis = try Disassembler(.arm32, thumb: true)
        let load = try #require(dis.decodeOne(bytes, at: 0x1_0460))
        #expect(load.text == "ldr.w pc, [pc, #0]")
        // The pc reads as (0x10460 + 4) rounded down to 4: the word right after the load.
        #expect(load.pcRelativeAddress == 0x1_0464)
    }

    @Test func jumpAbsoluteAtTwoModFourStartsWithANop() throws {
        let bytes = Thumb2.jumpAbsolute(at: 0x1_046e, to: 0x1_0491)
        #expect(bytes == [0x00, 0xbf, 0xdf, 0xf8, 0x00, 0xf0, 0x91, 0x04, 0x01, 0x00])
        #expect(Thumb2.jumpLength(at: 0x1_046e) == 10)
        let dis = try Disassembler(.arm32, thumb: true)
        let decoded = dis.decode(Array(bytes.prefix(6)), at: 0x1_046e)
        #expect(decoded.map(\.mnemonic) == ["nop", "ldr.w"])
        // The load at 0x10470 reads 0x10474: aligned, and exactly where the literal is.
        #expect(decoded.last?.pcRelativeAddress == 0x1_0474)
        #expect(0x1_046e + 6 == 0x1_0474)
    }

    @Test(arguments: [
        (Int64(0), [UInt8]([0x00, 0x20, 0x70, 0x47]), ["movs r0, #0", "bx lr"]),
        (Int64(55), [0x37, 0x20, 0x70, 0x47], ["movs r0, #0x37", "bx lr"]),
        (Int64(0x1234), [0x41, 0xf2, 0x34, 0x20, 0x70, 0x47], ["movw r0, #0x1234", "bx lr"]),
        (Int64(-1), [0x4f, 0xf6, 0xff, 0x70, 0xcf, 0xf6, 0xff, 0x70, 0x70, 0x47], ["movw r0, #0xffff", "movt r0, #0xffff", "bx lr"]),
    ])
    func returnStub(value: Int64, golden: [UInt8], text: [String]) throws {
        let stub = try #require(Thumb2.returnStub(value))
        #expect(stub == golden)
        let dis = try Disassembler(.arm32, thumb: true)
        #expect(dis.decode(stub, at: 0x1000).map(\.text) == text)
    }

    @Test func returnStubBeyond32BitsIsRefused() {
        #expect(Thumb2.returnStub(0x1_0000_0000) == nil)
        #expect(Thumb2.returnStub(Int64(Int32.min) - 1) == nil)
        #expect(Thumb2.returnStub(0xffff_ffff) != nil)
    }
}

@Suite struct FileReturnStubTests {
    @Test(arguments: [
        (Int64(0), [UInt8]([0x00, 0x00, 0xa0, 0xe3, 0x1e, 0xff, 0x2f, 0xe1]), ["mov r0, #0", "bx lr"]),
        (Int64(55), [0x37, 0x00, 0xa0, 0xe3, 0x1e, 0xff, 0x2f, 0xe1], ["mov r0, #0x37", "bx lr"]),
        (Int64(0xff00_0000), [0xff, 0x04, 0xa0, 0xe3, 0x1e, 0xff, 0x2f, 0xe1], ["mov r0, #0xff000000", "bx lr"]),
        (Int64(-1), [0x00, 0x00, 0xe0, 0xe3, 0x1e, 0xff, 0x2f, 0xe1], ["mvn r0, #0", "bx lr"]),
        (Int64(0x1234), [0x34, 0x02, 0x01, 0xe3, 0x1e, 0xff, 0x2f, 0xe1], ["movw r0, #0x1234", "bx lr"]),
        (Int64(0x1234_5678), [0x78, 0x06, 0x05, 0xe3, 0x34, 0x02, 0x41, 0xe3, 0x1e, 0xff, 0x2f, 0xe1],
         ["movw r0, #0x5678", "movt r0, #0x1234", "bx lr"]),
    ])
    func arm32(value: Int64, golden: [UInt8], text: [String]) throws {
        let stub = try #require(ARM32.returnStub(value))
        #expect(stub == golden)
        #expect(try Disassembler(.arm32).decode(stub, at: 0x8000).map(\.text) == text)
    }

    @Test func arm32Beyond32BitsIsRefused() {
        #expect(ARM32.returnStub(0x1_0000_0000) == nil)
        #expect(I386.returnStub(-0x8000_0001) == nil)
    }

    @Test(arguments: [
        (Int64(0), [UInt8]([0x00, 0x00, 0x80, 0xd2, 0xc0, 0x03, 0x5f, 0xd6]), ["movz x0, #0", "ret"]),
        (Int64(55), [0xe0, 0x06, 0x80, 0xd2, 0xc0, 0x03, 0x5f, 0xd6], ["movz x0, #0x37", "ret"]),
        (Int64(-1), [0x00, 0x00, 0x80, 0x92, 0xc0, 0x03, 0x5f, 0xd6], ["movn x0, #0", "ret"]),
    ])
    func aarch64(value: Int64, golden: [UInt8], text: [String]) throws {
        // Golden bytes as binutils assembles `mov x0, #N`; capstone 4 names the movz/movn behind it.
        #expect(AArch64.returnStub(value) == golden)
        #expect(try Disassembler(.aarch64).decode(golden, at: 0x40_0000).map(\.text) == text)
    }

    @Test func aarch64LargeValueUsesALiteral() throws {
        let stub = AArch64.returnStub(0x1122_3344_5566_7788)
        #expect(stub == [0x40, 0x00, 0x00, 0x58, 0xc0, 0x03, 0x5f, 0xd6, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
        let decoded = try Disassembler(.aarch64).decode(Array(stub.prefix(8)), at: 0x40_0000)
        #expect(decoded.map(\.text) == ["ldr x0, #0x400008", "ret"])
        #expect(decoded.first?.pcRelativeAddress == 0x40_0008)
    }

    @Test func i386() throws {
        #expect(I386.returnStub(0) == [0x31, 0xc0, 0xc3])
        #expect(I386.returnStub(55) == [0xb8, 0x37, 0x00, 0x00, 0x00, 0xc3])
        #expect(I386.returnStub(-2) == [0xb8, 0xfe, 0xff, 0xff, 0xff, 0xc3])
        let stub = try #require(I386.returnStub(55))
        #expect(try Disassembler(.i386).decode(stub, at: 0x804_8000).map(\.text) == ["mov eax, 0x37", "ret"])
    }
}

@Suite struct ARMDisassemblyTests {
    @Test func armBranchesAndLiterals() throws {
        let dis = try Disassembler(.arm32)
        // b +8; .word; ldr r0, [pc, #-12]; blt back to 0x8004; bl 0x9000; bx lr
        let code: [UInt8] = [0x00, 0x00, 0x00, 0xea,   // b 0x8008
                             0x0c, 0x00, 0x1f, 0xe5,   // ldr r0, [pc, #-0xc] at 0x8004 reads 0x8000
                             0xfd, 0xff, 0xff, 0xba,   // blt 0x8004 at 0x8008
                             0xfb, 0x03, 0x00, 0xeb,   // bl 0x9000 at 0x800c
                             0x1e, 0xff, 0x2f, 0xe1]   // bx lr
        let decoded = dis.decode(code, at: 0x8000)
        #expect(decoded.count == 5)
        #expect(decoded[0].branchTarget == 0x8008 && decoded[0].isJump)
        #expect(decoded[1].pcRelativeAddress == 0x8000)
        #expect(decoded[2].branchTarget == 0x8004 && decoded[2].isConditionalBranch)
        #expect(decoded[3].branchTarget == 0x9000 && decoded[3].isCall)
        #expect(decoded[4].isReturn)
    }

    @Test func thumbBranchesAndLiterals() throws {
        let dis = try Disassembler(.arm32, thumb: true)
        let code: [UInt8] = [0x01, 0x48,               // ldr r0, [pc, #4] at 0x1002: pc = 0x1004 -> 0x1008
                             0xfd, 0xdb,               // blt 0x1000 at 0x1004 (pc + 4 - 6)
                             0x70, 0x47]               // bx lr
        let decoded = dis.decode(code, at: 0x1002)
        #expect(decoded.map(\.size) == [2, 2, 2])
        #expect(decoded[0].pcRelativeAddress == 0x1008)
        #expect(decoded[1].branchTarget == 0x1002 && decoded[1].isConditionalBranch)
        #expect(decoded[2].isReturn)
    }

    @Test func aarch64BranchesAndLiterals() throws {
        let dis = try Disassembler(.aarch64)
        let code: [UInt8] = [0x40, 0x00, 0x00, 0x18,   // ldr w0, #8 (0x400008)
                             0xc0, 0x03, 0x5f, 0xd6]   // ret
        let decoded = dis.decode(code, at: 0x40_0000)
        #expect(decoded.first?.pcRelativeAddress == 0x40_0008)
        #expect(decoded.last?.isReturn == true)
        let loop = dis.decode([0xeb, 0xff, 0xff, 0x54, 0xff, 0xff, 0xff, 0x97], at: 0x40_0010)   // b.lt 0x40000c; bl 0x40000c
        #expect(loop[0].branchTarget == 0x40_000c && loop[0].isConditionalBranch)
        #expect(loop[1].branchTarget == 0x40_0010 && loop[1].isCall)
    }
}

/// Relative branches, for position-independent files (an absolute jump's literal is not relocated).
@Suite struct RelativeBranchEncoderTests {
    @Test func aarch64() throws {
        #expect(AArch64.branch(from: 0xba040, to: 0xba080) == [0x10, 0x00, 0x00, 0x14])
        let dis = try Disassembler(.aarch64)
        for (from, to) in [(UInt64(0x40_0000), UInt64(0x40_0010)), (0x40_0010, 0x40_0000), (0x800_0000, 0x800_0000 + (1 << 27) - 4), (0x800_0000, 0)] {
            let bytes = try #require(AArch64.branch(from: from, to: to))
            #expect(dis.decodeOne(bytes, at: from)?.branchTarget == to)
        }
        #expect(AArch64.branch(from: 0, to: 1 << 27) == nil)
        #expect(AArch64.branch(from: 0, to: 2) == nil)
    }

    @Test func arm32() throws {
        #expect(ARM32.branch(from: 0x8000, to: 0x8008) == [0x00, 0x00, 0x00, 0xea])
        #expect(ARM32.branch(from: 0x8008, to: 0x8000) == [0xfc, 0xff, 0xff, 0xea])
        let dis = try Disassembler(.arm32)
        for (from, to) in [(UInt32(0x1_0000), UInt32(0x1_0468)), (0x20_0000, 0x1_0000), (0x100_0000, 0x100_0008 + (1 << 25) - 4)] {
            let bytes = try #require(ARM32.branch(from: from, to: to))
            let insn = try #require(dis.decodeOne(bytes, at: UInt64(from)))
            #expect(insn.branchTarget == UInt64(to) && insn.isJump)
        }
        #expect(ARM32.branch(from: 0, to: 8 + (1 << 25)) == nil)
        #expect(ARM32.branch(from: 0, to: 0x102) == nil)
    }

    @Test func thumb2() throws {
        // As graft wrote it into Debian's armhf libc (getpid -> getppid), and the CPU ran it under qemu-arm.
        #expect(Thumb2.branch(from: 0x89c40, to: 0x89c50) == [0x00, 0xf0, 0x06, 0xb8])
        let dis = try Disassembler(.arm32, thumb: true)
        for (from, to) in [(UInt32(0x1000), UInt32(0x1000)), (0x1004, 0x1000), (0x1002, 0x9_0006), (0x90_0000, 0x10_0002), (0x100_0000, 0x100_0004 + (1 << 24) - 2)] {
            let bytes = try #require(Thumb2.branch(from: from, to: to | 1))   // a Thumb symbol's bit 0 is ignored
            let insn = try #require(dis.decodeOne(bytes, at: UInt64(from)))
            #expect(insn.mnemonic == "b.w" && insn.branchTarget == UInt64(to), "\(insn)")
        }
        #expect(Thumb2.branch(from: 0, to: 4 + (1 << 24)) == nil)
    }
}
