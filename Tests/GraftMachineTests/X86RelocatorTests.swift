import Glibc
import Testing
@testable import GraftMachine

/// The x86_64 relocator: golden bytes for every rewritten form, refusals by name, and — the real
/// proof — functions run from their trampolines in this test process return what the untouched
/// functions return.
@Suite struct X86RelocatorTests {
    let disassembler: Disassembler
    init() throws { disassembler = try Disassembler(.x86_64) }

    func relocate(_ bytes: [UInt8], at address: UInt64, length: Int, to trampoline: UInt64) throws -> X86Relocator.Trampoline {
        try X86Relocator.relocate(disassembler.decode(bytes, at: address), length: length, to: trampoline)
    }

    // MARK: golden bytes

    @Test func plainInstructionsAreCopiedAndAJumpBackFollows() throws {
        // push rbp; mov rbp, rsp; sub rsp, 0x10
        let t = try relocate([0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc3], at: 0x1000, length: 5, to: 0x2000)
        // endbr64, the 8 moved bytes, jmp rel32 back to 0x1008 from 0x200c.
        #expect(t.bytes == X86_64.endbr64 + [0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10] + [0xe9] + le(0x1008 &- 0x2011))
        #expect(t.resumeAddress == 0x1008 && t.movedLength == 8)
        #expect(t.addressMap == [.init(original: 0x1000, relocated: 0x2004), .init(original: 0x1001, relocated: 0x2005),
                                 .init(original: 0x1004, relocated: 0x2008)])
        #expect(t.relocated(0x1004) == 0x2008 && t.relocated(0x1002) == nil)
    }

    @Test func ripRelativeDisplacementIsReaimed() throws {
        // mov eax, [rip+0x100] at 0x1000 reads 0x1106.
        let t = try relocate([0x8b, 0x05, 0x00, 0x01, 0x00, 0x00, 0xc3], at: 0x1000, length: 5, to: 0x3000)
        // At 0x3004 the copy ends at 0x300a: displacement 0x1106 - 0x300a.
        #expect(Array(t.bytes[4..<10]) == [0x8b, 0x05] + le(0x1106 &- 0x300a))
        let copy = try #require(disassembler.decodeOne(Array(t.bytes[4...]), at: 0x3004))
        #expect(copy.text == "mov eax, dword ptr [rip - 0x1f04]")
    }

    @Test func branchesOutOfReachTakeTheirAbsoluteForms() throws {
        let far: UInt64 = 0x7f00_0000_0000
        // jmp rel8 +3 at 0x400000 → target 0x400005.
        let jump = try relocate([0xeb, 0x03, 0x90, 0x90, 0x90, 0xc3], at: 0x40_0000, length: 5, to: far)
        #expect(Array(jump.bytes[4..<18]) == X86_64.jumpAbsolute(to: 0x40_0005))
        // je rel8 +0x10 → inverted jne over jmp [rip+0].
        let jcc = try relocate([0x74, 0x10, 0x90, 0x90, 0x90, 0xc3], at: 0x40_0000, length: 2, to: far)
        #expect(Array(jcc.bytes[4..<20]) == [0x75, 0x0e] + X86_64.jumpAbsolute(to: 0x40_0012))
        // call rel32 → call [rip+2]; jmp +8; .quad target.
        let call = try relocate([0xe8, 0x00, 0x01, 0x00, 0x00, 0xc3], at: 0x40_0000, length: 5, to: far)
        #expect(Array(call.bytes[4..<20]) == [0xff, 0x15, 0x02, 0x00, 0x00, 0x00, 0xeb, 0x08] + le64(0x40_0105))
        // And the jump back is absolute too.
        #expect(Array(call.bytes.suffix(14)) == X86_64.jumpAbsolute(to: 0x40_0005))
    }

    @Test func nearBranchesBecomeRel32() throws {
        // jne rel8 → jne rel32 (0f 85), reaching the original target.
        let t = try relocate([0x85, 0xff, 0x75, 0x02, 0x31, 0xff, 0x89, 0xf8, 0xc3], at: 0x1000, length: 5, to: 0x2000)
        // test (2 bytes at 0x2004), jne rel32 at 0x2006 (6 bytes), target 0x1006.
        #expect(Array(t.bytes[6..<12]) == [0x0f, 0x85] + le(0x1006 &- 0x200c))
    }

    @Test func aBranchToAMovedInstructionIsAimedAtItsCopy() throws {
        // xor eax,eax; test edi,edi; je +2 (→ 0x1008); inc eax; inc eax; ret — 9 bytes moved.
        let t = try relocate([0x31, 0xc0, 0x85, 0xff, 0x74, 0x02, 0xff, 0xc0, 0xff, 0xc0, 0xc3], at: 0x1000, length: 9, to: 0x2000)
        let copyOf1008 = try #require(t.relocated(0x1008))
        let je = try #require(disassembler.decodeOne(Array(t.bytes[8...]), at: 0x2008))
        #expect(je.branchTarget == copyOf1008, "\(je.text)")
    }

    // MARK: refusals

    @Test func refusalsNameTheInstruction() throws {
        #expect(throws: X86Relocator.Refusal.self) { try relocate([0xcc, 0x90, 0x90, 0x90, 0x90, 0xc3], at: 0x1000, length: 5, to: 0x2000) }
        do {
            _ = try relocate([0xe2, 0xfe, 0x90, 0x90, 0x90, 0xc3], at: 0x1000, length: 5, to: 0x2000)
            Issue.record("loop was relocated")
        } catch let refusal as X86Relocator.Refusal {
            #expect(refusal.description.hasPrefix("'loop 0x1000' at 0x1000 cannot be relocated: loop/jrcxz"), "\(refusal)")
        }
        // rip-relative memory 4 GiB away from the trampoline.
        do {
            _ = try relocate([0x8b, 0x05, 0x00, 0x01, 0x00, 0x00, 0xc3], at: 0x1000, length: 5, to: 0x1_0000_2000)
            Issue.record("an out-of-reach rip-relative operand was relocated")
        } catch let refusal as X86Relocator.Refusal {
            #expect(refusal.reason.contains("more than ±2 GiB from the trampoline"), "\(refusal)")
        }
        // Too short: a 3-byte function.
        #expect(throws: X86Relocator.Refusal.self) { try relocate([0x31, 0xc0, 0xc3], at: 0x1000, length: 5, to: 0x2000) }
        // A branch into the middle of a moved instruction: jmp -1 lands inside itself... use je to 0x1003 inside mov.
        do {
            _ = try relocate([0x74, 0x01, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3], at: 0x1000, length: 7, to: 0x2000)
            Issue.record("a branch into a moved instruction's middle was relocated")
        } catch let refusal as X86Relocator.Refusal {
            #expect(refusal.reason.contains("middle of a moved instruction"), "\(refusal)")
        }
    }

    // MARK: run for real

    /// Functions written into an executable page of this process, relocated into a trampoline in the
    /// same page, then called both ways: the trampoline (which jumps back into the original after the
    /// moved bytes) must compute what the original computes.
    @Test(arguments: RunCase.all) func aFunctionRunThroughItsTrampolineReturnsWhatTheOriginalReturns(_ c: RunCase) throws {
        let size = 0x10000
        let raw = mmap(nil, size, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        let page = try #require(raw == MAP_FAILED ? nil : raw)
        defer { munmap(page, size) }
        let base = UInt64(UInt(bitPattern: page))
        func write(_ bytes: [UInt8], at offset: Int) { for (i, b) in bytes.enumerated() { page.storeBytes(of: b, toByteOffset: offset + i, as: UInt8.self) } }
        // Data the rip-relative cases read, and a helper the call case calls: mov eax, 11; ret.
        page.storeBytes(of: Int32(41), toByteOffset: 0x8000, as: Int32.self)
        write([0xb8, 0x0b, 0x00, 0x00, 0x00, 0xc3], at: 0x100)
        let function = base + 0x1000
        let bytes = c.bytes(function, base)
        write(bytes, at: 0x1000)
        let t = try X86Relocator.relocate(disassembler.decode(bytes, at: function), length: c.length, to: base + 0x4000)
        write(t.bytes, at: 0x4000)
        typealias F = @convention(c) (Int32) -> Int32
        let original = unsafeBitCast(UnsafeRawPointer(bitPattern: UInt(function))!, to: F.self)
        let trampoline = unsafeBitCast(UnsafeRawPointer(bitPattern: UInt(t.address))!, to: F.self)
        for argument: Int32 in [0, 1, 5] {
            let expected = original(argument)
            #expect(expected == c.expected(argument), "\(c.name)(\(argument)): the test's own function is wrong")
            #expect(trampoline(argument) == expected, "\(c.name)(\(argument)) through the trampoline")
        }
    }

    struct RunCase: Sendable, CustomStringConvertible {
        let name: String
        let length: Int
        /// The function's bytes for its address and the page base (data at base+0x8000 holds 41,
        /// a helper at base+0x100 returns 11).
        let bytes: @Sendable (UInt64, UInt64) -> [UInt8]
        let expected: @Sendable (Int32) -> Int32
        var description: String { name }

        static let all: [RunCase] = [
            // mov eax, [rip+D] (data = 41); add eax, 1; ret
            RunCase(name: "rip-relative load", length: 5,
                    bytes: { f, base in [0x8b, 0x05] + le(base + 0x8000 &- (f + 6)) + [0x83, 0xc0, 0x01, 0xc3] },
                    expected: { _ in 42 }),
            // lea rax, [rip+D]; mov eax, [rax]; add eax, edi; ret
            RunCase(name: "rip-relative lea", length: 5,
                    bytes: { f, base in [0x48, 0x8d, 0x05] + le(base + 0x8000 &- (f + 7)) + [0x8b, 0x00, 0x01, 0xf8, 0xc3] },
                    expected: { 41 + $0 }),
            // test edi, edi; je +6; mov eax, 9; ret; mov eax, 7; ret
            RunCase(name: "jcc rel8", length: 5,
                    bytes: { _, _ in [0x85, 0xff, 0x74, 0x06, 0xb8, 0x09, 0x00, 0x00, 0x00, 0xc3, 0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3] },
                    expected: { $0 == 0 ? 7 : 9 }),
            // jmp +3; nop ×3; mov eax, 5; ret
            RunCase(name: "jmp rel8", length: 5,
                    bytes: { _, _ in [0xeb, 0x03, 0x90, 0x90, 0x90, 0xb8, 0x05, 0x00, 0x00, 0x00, 0xc3] },
                    expected: { _ in 5 }),
            // jmp rel32 +1 over an int3 that must never run; mov eax, edi; ret
            RunCase(name: "jmp rel32", length: 5,
                    bytes: { _, _ in [0xe9, 0x01, 0x00, 0x00, 0x00, 0xcc, 0x89, 0xf8, 0xc3] },
                    expected: { $0 }),
            // call helper (returns 11); add eax, 1; ret — the stack is misaligned by the helper's
            // return address only, which the helper does not mind.
            RunCase(name: "call rel32", length: 5,
                    bytes: { f, base in [0xe8] + le(base + 0x100 &- (f + 5)) + [0x83, 0xc0, 0x01, 0xc3] },
                    expected: { _ in 12 }),
            // endbr64; push rbp; mov rbp, rsp; mov eax, edi; add eax, eax; pop rbp; ret
            RunCase(name: "endbr64 and a frame", length: 5,
                    bytes: { _, _ in X86_64.endbr64 + [0x55, 0x48, 0x89, 0xe5, 0x89, 0xf8, 0x01, 0xc0, 0x5d, 0xc3] },
                    expected: { $0 * 2 }),
            // xor eax,eax; test edi,edi; je +2; inc eax; inc eax; ret — the je stays inside the moved bytes.
            RunCase(name: "internal branch", length: 9,
                    bytes: { _, _ in [0x31, 0xc0, 0x85, 0xff, 0x74, 0x02, 0xff, 0xc0, 0xff, 0xc0, 0xc3] },
                    expected: { $0 == 0 ? 1 : 2 }),
        ]
    }
}

private func le(_ difference: UInt64) -> [UInt8] {
    let v = UInt32(truncatingIfNeeded: difference)
    return [UInt8(v & 0xff), UInt8(v >> 8 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 24)]
}

private func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
