import Testing
@testable import GraftMachine

@Suite struct ArchitectureTests {
    @Test func allCasesAndRawValues() {
        #expect(Architecture.allCases == [.x86_64, .aarch64, .arm32, .i386])
        #expect(Architecture.allCases.map(\.rawValue) == ["x86_64", "aarch64", "arm32", "i386"])
        #expect(Architecture(rawValue: "aarch64") == .aarch64)
        #expect(Architecture(rawValue: "arm64") == nil)
    }

    @Test func breakpoints() {
        #expect(Architecture.x86_64.breakpoint == [0xcc])
        #expect(Architecture.i386.breakpoint == [0xcc])
        #expect(Architecture.aarch64.breakpoint == [0x00, 0x00, 0x20, 0xd4])
        #expect(Architecture.arm32.breakpoint == [0xf0, 0x01, 0xf0, 0xe7])
    }

    @Test func trapAndSizes() {
        #expect(Architecture.x86_64.trapAdvancesPC)
        #expect(Architecture.i386.trapAdvancesPC)
        #expect(!Architecture.aarch64.trapAdvancesPC)
        #expect(!Architecture.arm32.trapAdvancesPC)
        #expect(Architecture.allCases.map(\.pointerSize) == [8, 8, 4, 4])
        #expect(Architecture.allCases.map(\.maxInstructionLength) == [15, 4, 4, 15])
        #expect(Architecture.allCases.map(\.absoluteJumpLength) == [14, 16, 8, 5])
    }

    @Test func hostIsX86_64OnThisMachine() {
        #if arch(x86_64)
        #expect(Architecture.host == .x86_64)
        #endif
    }

    @Test func breakpointsDecode() throws {
        let x86 = try #require(try Disassembler(.x86_64).decodeOne(Architecture.x86_64.breakpoint, at: 0x1000))
        #expect(x86.text == "int3")
        #expect(x86.isInterrupt)
        let i386 = try #require(try Disassembler(.i386).decodeOne(Architecture.i386.breakpoint, at: 0x1000))
        #expect(i386.text == "int3")
        #expect(i386.isInterrupt)
        let a64 = try #require(try Disassembler(.aarch64).decodeOne(Architecture.aarch64.breakpoint, at: 0x1000))
        #expect(a64.text == "brk #0")
        let a32 = try #require(try Disassembler(.arm32).decodeOne(Architecture.arm32.breakpoint, at: 0x1000))
        // 0xe7f001f0: UDF with imm12 = 0x001, imm4 = 0x0 → #0x10.
        #expect(a32.text == "udf #0x10")
        #expect(a32.size == 4)
    }

    @Test func littleEndianHelper() {
        #expect(littleEndian(UInt32(0x1122_3344)) == [0x44, 0x33, 0x22, 0x11])
        #expect(littleEndian(Int32(-2)) == [0xfe, 0xff, 0xff, 0xff])
        #expect(littleEndian(UInt64(0x0102_0304_0506_0708)) == [8, 7, 6, 5, 4, 3, 2, 1])
    }
}
