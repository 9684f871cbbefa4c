import Testing
import GraftMachine

/// Golden bytes for every x86-64 encoder, then the same bytes through capstone.
@Suite struct X86_64EncoderTests {
    // A typical PIE text address; rel32 boundaries are measured from its end (from + 5).
    static let from: UInt64 = 0x5555_5555_1000
    static let next: UInt64 = from + 5

    @Test func constants() {
        #expect(X86_64.endbr64 == [0xf3, 0x0f, 0x1e, 0xfa])
        #expect(X86_64.int3 == 0xcc)
        #expect(X86_64.rel32JumpLength == 5)
        #expect(X86_64.absoluteJumpLength == 14)
    }

    @Test func jumpRel32Golden() {
        // Forward, short.
        #expect(X86_64.jumpRel32(from: 0x401000, to: 0x401234) == [0xe9, 0x2f, 0x02, 0x00, 0x00])
        // To the next instruction: displacement 0.
        #expect(X86_64.jumpRel32(from: 0x401000, to: 0x401005) == [0xe9, 0x00, 0x00, 0x00, 0x00])
        // To itself: -5.
        #expect(X86_64.jumpRel32(from: 0x401000, to: 0x401000) == [0xe9, 0xfb, 0xff, 0xff, 0xff])
        // Backward.
        #expect(X86_64.jumpRel32(from: 0x7f12_3456_0000, to: 0x7f12_3400_0000) == [0xe9, 0xfb, 0xff, 0xa9, 0xff])
        // Across 2^64 wrap: rip arithmetic is modular.
        #expect(X86_64.jumpRel32(from: 0xffff_ffff_ffff_fff0, to: 0x10) == [0xe9, 0x1b, 0x00, 0x00, 0x00])
        #expect(X86_64.jumpRel32(from: 0x10, to: 0xffff_ffff_ffff_fff0) == [0xe9, 0xdb, 0xff, 0xff, 0xff])
    }

    @Test func jumpRel32Boundaries() {
        let from = Self.from, next = Self.next
        // Largest forward displacement that fits: +0x7fffffff.
        #expect(X86_64.jumpRel32(from: from, to: next + 0x7fff_ffff) == [0xe9, 0xff, 0xff, 0xff, 0x7f])
        // First that does not: +0x80000000.
        #expect(X86_64.jumpRel32(from: from, to: next + 0x8000_0000) == nil)
        // Largest backward displacement that fits: -0x80000000.
        #expect(X86_64.jumpRel32(from: from, to: next - 0x8000_0000) == [0xe9, 0x00, 0x00, 0x00, 0x80])
        // First that does not: -0x80000001.
        #expect(X86_64.jumpRel32(from: from, to: next - 0x8000_0001) == nil)
        // Far away in both directions.
        #expect(X86_64.jumpRel32(from: 0x40_1000, to: 0x7fff_f7a0_0000) == nil)
        #expect(X86_64.jumpRel32(from: 0x7fff_f7a0_0000, to: 0x40_1000) == nil)
    }

    @Test func jumpAbsoluteGolden() {
        #expect(X86_64.jumpAbsolute(to: 0x7fff_f7a1_2345) ==
                [0xff, 0x25, 0x00, 0x00, 0x00, 0x00, 0x45, 0x23, 0xa1, 0xf7, 0xff, 0x7f, 0x00, 0x00])
        #expect(X86_64.jumpAbsolute(to: 0) == [0xff, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(X86_64.jumpAbsolute(to: 0x0102_0304_0506_0708) ==
                [0xff, 0x25, 0, 0, 0, 0, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01])
        #expect(X86_64.jumpAbsolute(to: 0x1234).count == X86_64.absoluteJumpLength)
    }

    @Test func jumpChoosesShortest() {
        let from = Self.from, next = Self.next
        #expect(X86_64.jump(from: from, to: next + 0x7fff_ffff) == [0xe9, 0xff, 0xff, 0xff, 0x7f])
        #expect(X86_64.jump(from: from, to: next + 0x8000_0000) == X86_64.jumpAbsolute(to: next + 0x8000_0000))
        #expect(X86_64.jump(from: from, to: next - 0x8000_0000) == [0xe9, 0x00, 0x00, 0x00, 0x80])
        #expect(X86_64.jump(from: from, to: next - 0x8000_0001) == X86_64.jumpAbsolute(to: next - 0x8000_0001))
    }

    static let jumpCases: [(UInt64, UInt64)] = [
        (0x401000, 0x401234), (0x401000, 0x401000), (0x401000, 0x401005), (0x7f12_3456_0000, 0x7f12_3400_0000),
        (from, next + 0x7fff_ffff), (from, next + 0x8000_0000), (from, next - 0x8000_0000), (from, next - 0x8000_0001),
        (0x40_1000, 0x7fff_f7a0_0000), (0x7fff_f7a0_0000, 0x40_1000),
    ]

    @Test(arguments: jumpCases)
    func jumpDecodes(from: UInt64, to: UInt64) throws {
        let dis = try Disassembler(.x86_64)
        let bytes = X86_64.jump(from: from, to: to)
        let insn = try #require(dis.decodeOne(bytes, at: from))
        #expect(insn.mnemonic == "jmp")
        #expect(insn.isJump)
        #expect(!insn.isConditionalBranch && !insn.isCall && !insn.isReturn)
        #expect(insn.address == from)
        if bytes.count == 5 {
            #expect(insn.size == 5)
            #expect(insn.branchTarget == to)
            #expect(insn.operands == "0x" + String(to, radix: 16))
            #expect(!insn.isRIPRelative)
        } else {
            #expect(bytes.count == 14)
            #expect(insn.size == 6)
            #expect(insn.text == "jmp qword ptr [rip]")
            #expect(insn.branchTarget == nil)
            #expect(insn.isRIPRelative)
            // [rip] is the end of the jmp: the 8 bytes there are the target.
            let slot = Array(bytes[insn.size...])
            #expect(slot.count == 8)
            #expect(slot.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) } == to)
        }
    }

    @Test func jumpAbsoluteDecodes() throws {
        let dis = try Disassembler(.x86_64)
        let insns = dis.decode(X86_64.jumpAbsolute(to: 0x7fff_f7a1_2345), at: 0x401000, maxCount: 1)
        #expect(insns.count == 1)
        #expect(insns.first?.text == "jmp qword ptr [rip]")
        #expect(insns.first?.bytes == [0xff, 0x25, 0, 0, 0, 0])
        #expect(insns.first?.end == 0x401006)
    }

    @Test func returnStubGolden() {
        #expect(X86_64.returnStub(0) == [0x31, 0xc0, 0xc3])
        #expect(X86_64.returnStub(1) == [0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3])
        #expect(X86_64.returnStub(42) == [0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3])
        #expect(X86_64.returnStub(0xffff_ffff) == [0xb8, 0xff, 0xff, 0xff, 0xff, 0xc3])
        #expect(X86_64.returnStub(0x1_0000_0000) == [0x48, 0xb8, 0, 0, 0, 0, 1, 0, 0, 0, 0xc3])
        #expect(X86_64.returnStub(-1) == [0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xc3])
        #expect(X86_64.returnStub(Int64(Int32.min)) == [0x48, 0xc7, 0xc0, 0x00, 0x00, 0x00, 0x80, 0xc3])
        #expect(X86_64.returnStub(Int64(Int32.min) - 1) == [0x48, 0xb8, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xc3])
        #expect(X86_64.returnStub(.min) == [0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0x80, 0xc3])
        #expect(X86_64.returnStub(.max) == [0x48, 0xb8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xc3])
    }

    static let stubCases: [(Int64, String)] = [
        (0, "xor eax, eax"),
        (1, "mov eax, 1"),
        (42, "mov eax, 0x2a"),
        (0xffff_ffff, "mov eax, 0xffffffff"),
        (0x1_0000_0000, "movabs rax, 0x100000000"),
        (-1, "mov rax, -1"),
        (Int64(Int32.min), "mov rax, -0x80000000"),
        (Int64(Int32.min) - 1, "movabs rax, 0xffffffff7fffffff"),
        (.min, "movabs rax, 0x8000000000000000"),
        (.max, "movabs rax, 0x7fffffffffffffff"),
    ]

    @Test(arguments: stubCases)
    func returnStubDecodes(value: Int64, first: String) throws {
        let dis = try Disassembler(.x86_64)
        let bytes = X86_64.returnStub(value)
        let insns = dis.decode(bytes, at: 0x1000)
        #expect(insns.count == 2)
        #expect(insns.map(\.size).reduce(0, +) == bytes.count)
        #expect(insns.first?.text == first)
        #expect(insns.last?.text == "ret")
        #expect(insns.last?.isReturn == true)
        // Independently of the golden text: what the first instruction leaves in rax.
        #expect(try raxAfter(#require(insns.first)) == UInt64(bitPattern: value))
    }

    /// Emulates the one instruction a return stub starts with.
    private func raxAfter(_ insn: Instruction) throws -> UInt64 {
        if insn.text == "xor eax, eax" { return 0 }
        let parts = insn.operands.split(separator: ", ").map(String.init)
        try #require(parts.count == 2)
        var immText = Substring(parts[1])
        let negative = immText.hasPrefix("-")
        if negative { immText = immText.dropFirst() }
        let magnitude = try #require(immText.hasPrefix("0x") ? UInt64(immText.dropFirst(2), radix: 16) : UInt64(immText))
        let imm = negative ? 0 &- magnitude : magnitude
        switch (insn.mnemonic, parts[0]) {
        case ("mov", "eax"): return imm & 0xffff_ffff                              // writes to eax zero-extend
        case ("mov", "rax"): return UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: imm)))  // simm32
        case ("movabs", "rax"): return imm
        default: Issue.record("unexpected \(insn.text)"); return 0xdead
        }
    }
}
