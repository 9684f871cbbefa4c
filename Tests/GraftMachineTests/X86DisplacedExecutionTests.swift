import GraftCore
import GraftMachine
import Testing

/// A thread as plain values: registers and a word-addressed memory. Every read or write of a word
/// nobody put there fails, as an unmapped address would.
struct FakeThread: X86ThreadState, Equatable {
    var rip: UInt64 = 0x40_1000
    var rsp: UInt64 = 0x7fff_0000_1000
    var rbp: UInt64 = 0x7fff_0000_2000
    var eflags: UInt64 = 0x202
    var general: [UInt64] = (0..<16).map { 0x1111_0000 + UInt64($0) }
    var memory: [UInt64: UInt64] = [:]

    struct Unmapped: Error {}

    func register(encoding: Int) -> UInt64 { general[encoding] }
    mutating func readWord(at address: UInt64) throws -> UInt64 {
        guard let value = memory[address] else { throw Unmapped() }
        return value
    }
    mutating func writeWord(_ value: UInt64, at address: UInt64) throws {
        guard memory[address] != nil else { throw Unmapped() }
        memory[address] = value
    }
}

/// Golden tests of `X86DisplacedInstruction.execute`: the registers and memory after the displaced
/// instruction at 0x401000 ran, for each kind — the same effects the CPU would have had.
struct X86DisplacedExecutionTests {
    let at: UInt64 = 0x40_1000

    func run(_ displaced: X86DisplacedInstruction, slot: UInt64? = nil, _ thread: FakeThread = FakeThread()) throws -> FakeThread {
        var thread = thread
        try displaced.execute(at: at, slot: slot, on: &thread)
        return thread
    }

    @Test func skipMovesOnlyThePC() throws {
        var expected = FakeThread()
        expected.rip = at + 4
        #expect(try run(.skip(length: 4)) == expected)
    }

    @Test func pushWritesTheRegisterBelowRSP() throws {
        var thread = FakeThread()
        thread.memory[thread.rsp - 8] = 0
        var expected = thread
        expected.rsp -= 8
        expected.memory[expected.rsp] = thread.general[5]  // push rbp
        expected.rip = at + 1
        #expect(try run(.push(register: 5, length: 1), thread) == expected)
        // push r12 (41 54): encoding 12, two bytes.
        expected.memory[expected.rsp] = thread.general[12]
        expected.rip = at + 2
        #expect(try run(.push(register: 12, length: 2), thread) == expected)
    }

    @Test func pushWithACopyRunsTheCopy() throws {
        var expected = FakeThread()
        expected.rip = 0x7000_0020
        #expect(try run(.push(register: 5, length: 1), slot: 0x7000_0020) == expected)
    }

    @Test func pushToAnUnmappedStackFails() {
        #expect(throws: FakeThread.Unmapped.self) { try run(.push(register: 5, length: 1)) }
    }

    @Test func movRbpRsp() throws {
        var expected = FakeThread()
        expected.rbp = expected.rsp
        expected.rip = at + 3
        #expect(try run(.movRbpRsp(length: 3)) == expected)
    }

    @Test func subAndAddRSPSetTheFlags() throws {
        // sub rsp, 0x18: no carry, not zero, positive, parity of 0xe8 (4 bits: even → PF).
        var thread = FakeThread()
        thread.rsp = 0x1000
        var after = try run(.adjustRsp(subtract: true, immediate: 0x18, length: 4), thread)
        #expect(after.rsp == 0xfe8)
        #expect(after.rip == at + 4)
        #expect(after.eflags == 0x202 | 0x4 | 0x10)  // PF, AF (borrow from bit 4)
        // add rsp, 8 reaching zero: ZF, CF (carry out), PF.
        thread.rsp = 0xffff_ffff_ffff_fff8
        after = try run(.adjustRsp(subtract: false, immediate: 8, length: 7), thread)
        #expect(after.rsp == 0)
        #expect(after.rip == at + 7)
        #expect(after.eflags == 0x202 | 0x1 | 0x4 | 0x10 | 0x40)
    }

    @Test func jumpAndCall() throws {
        var expected = FakeThread()
        expected.rip = 0x40_2000
        #expect(try run(.jump(target: 0x40_2000)) == expected)

        var thread = FakeThread()
        thread.memory[thread.rsp - 8] = 0
        expected = thread
        expected.rsp -= 8
        expected.memory[expected.rsp] = at + 5
        expected.rip = 0x40_3000
        #expect(try run(.call(target: 0x40_3000, returnAddress: at + 5), thread) == expected)
    }

    @Test func conditionalJumpFollowsTheFlags() throws {
        var thread = FakeThread()
        thread.eflags = 0x202 | 0x40  // ZF
        let je = X86DisplacedInstruction.conditionalJump(condition: 0x4, target: 0x40_2000, fallThrough: at + 2)
        let jne = X86DisplacedInstruction.conditionalJump(condition: 0x5, target: 0x40_2000, fallThrough: at + 2)
        #expect(try run(je, thread).rip == 0x40_2000)
        #expect(try run(jne, thread).rip == at + 2)
        thread.eflags = 0x202
        #expect(try run(je, thread).rip == at + 2)
        #expect(try run(jne, thread).rip == 0x40_2000)
    }

    @Test func jumpAndCallThroughMemory() throws {
        var thread = FakeThread()
        thread.memory[0x40_4000] = 0x7f00_1234  // a PLT slot
        thread.memory[thread.rsp - 8] = 0
        var expected = thread
        expected.rip = 0x7f00_1234
        #expect(try run(.jumpThroughMemory(slot: 0x40_4000), thread) == expected)
        expected.rsp -= 8
        expected.memory[expected.rsp] = at + 6
        #expect(try run(.callThroughMemory(slot: 0x40_4000, returnAddress: at + 6), thread) == expected)
        #expect(throws: FakeThread.Unmapped.self) { try run(.jumpThroughMemory(slot: 0x50_0000), thread) }
    }

    @Test func retPopsTheReturnAddressAndTheImmediate() throws {
        var thread = FakeThread()
        thread.memory[thread.rsp] = 0x40_5555
        var expected = thread
        expected.rip = 0x40_5555
        expected.rsp += 8
        #expect(try run(.ret(popBytes: 0), thread) == expected)
        expected.rsp += 16
        #expect(try run(.ret(popBytes: 16), thread) == expected)
    }

    @Test func outOfLineGoesToTheCopy() throws {
        var expected = FakeThread()
        expected.rip = 0x7000_0040
        #expect(try run(.outOfLine, slot: 0x7000_0040) == expected)
    }

    @Test func outOfLineWithoutACopyAndRefusedThrow() {
        #expect {
            try run(.outOfLine)
        } throws: { error in
            guard case GraftError.hookRefused(_, let address, let reason) = error else { return false }
            return address == at && reason == "no out-of-line copy"
        }
        #expect {
            try run(.refused("'syscall' enters the kernel"))
        } throws: { error in
            guard case GraftError.hookRefused(_, _, let reason) = error else { return false }
            return reason == "'syscall' enters the kernel"
        }
    }

    /// A whole prologue, classified from its bytes and run instruction by instruction.
    @Test func executeOnDecodedPrologue() throws {
        // endbr64; push rbp; mov rbp, rsp; sub rsp, 0x20.
        let disassembler = try Disassembler(.x86_64)
        let code: [UInt8] = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x20]
        var thread = FakeThread()
        thread.rsp = 0x7fff_0000_1000
        thread.memory[thread.rsp - 8] = 0
        for instruction in disassembler.decode(code, at: at) {
            #expect(thread.rip == instruction.address)
            try X86DisplacedInstruction.classify(instruction).execute(at: instruction.address, slot: nil, on: &thread)
        }
        #expect(thread.rip == at + UInt64(code.count))
        #expect(thread.rbp == 0x7fff_0000_1000 - 8)
        #expect(thread.rsp == 0x7fff_0000_1000 - 8 - 0x20)
        #expect(thread.memory[0x7fff_0000_1000 - 8] == FakeThread().general[5])
    }
}
