import Testing
import GraftMachine

@Suite struct DisassemblerTests {
    let dis: Disassembler
    init() throws { dis = try Disassembler(.x86_64) }

    private func one(_ bytes: [UInt8], at address: UInt64 = 0x401000) throws -> Instruction {
        let insn = try #require(dis.decodeOne(bytes, at: address))
        #expect(insn.bytes == bytes)
        #expect(insn.size == bytes.count)
        return insn
    }

    @Test func callRel32Target() throws {
        let fwd = try one([0xe8, 0xfb, 0x0f, 0x00, 0x00])
        #expect(fwd.text == "call 0x402000")
        #expect(fwd.isCall && !fwd.isJump && !fwd.isConditionalBranch && !fwd.isReturn)
        #expect(fwd.branchTarget == 0x402000)
        let back = try one([0xe8, 0x00, 0xf0, 0xff, 0xff])
        #expect(back.branchTarget == 0x400005)
        #expect(back.end == 0x401005)
    }

    @Test func indirectBranchesHaveNoTarget() throws {
        let callRax = try one([0xff, 0xd0])
        #expect(callRax.text == "call rax")
        #expect(callRax.isCall && callRax.branchTarget == nil)
        let jmpRax = try one([0xff, 0xe0])
        #expect(jmpRax.text == "jmp rax")
        #expect(jmpRax.isJump && jmpRax.branchTarget == nil && !jmpRax.isConditionalBranch)
        let callMem = try one([0xff, 0x15, 0x10, 0x00, 0x00, 0x00])
        #expect(callMem.text == "call qword ptr [rip + 0x10]")
        #expect(callMem.isCall && callMem.isRIPRelative && callMem.branchTarget == nil)
    }

    @Test func jccRel8AndRel32Targets() throws {
        let je = try one([0x74, 0x10], at: 0x1000)
        #expect(je.text == "je 0x1012")
        #expect(je.isConditionalBranch && !je.isJump && !je.isCall)
        #expect(je.branchTarget == 0x1012)
        let jgBack = try one([0x7f, 0x80], at: 0x1000)
        #expect(jgBack.mnemonic == "jg")
        #expect(jgBack.branchTarget == 0xf82)
        let jne32 = try one([0x0f, 0x85, 0x00, 0x01, 0x00, 0x00], at: 0x1000)
        #expect(jne32.mnemonic == "jne")
        #expect(jne32.isConditionalBranch)
        #expect(jne32.branchTarget == 0x1106)
        let jmp8 = try one([0xeb, 0xfe], at: 0x1000)
        #expect(jmp8.isJump && !jmp8.isConditionalBranch && jmp8.branchTarget == 0x1000)
    }

    @Test func loopAndJrcxzAreConditional() throws {
        for (bytes, mnemonic) in [([UInt8(0xe2), 0xfe], "loop"), ([0xe1, 0xfe], "loope"), ([0xe0, 0xfe], "loopne"), ([0xe3, 0xfe], "jrcxz")] {
            let insn = try one(bytes, at: 0x2000)
            #expect(insn.mnemonic == mnemonic)
            #expect(insn.isConditionalBranch && !insn.isJump)
            #expect(insn.branchTarget == 0x2000)
        }
    }

    @Test func returns() throws {
        let ret = try one([0xc3])
        #expect(ret.isReturn && !ret.isJump && ret.branchTarget == nil)
        let retN = try one([0xc2, 0x08, 0x00])
        #expect(retN.text == "ret 8")
        #expect(retN.isReturn && retN.branchTarget == nil)
        #expect(try one([0xcb]).isReturn)   // retf
        #expect(!(try one([0x90]).isReturn))
    }

    @Test func ripRelativeFlagged() throws {
        let mov = try one([0x48, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00])
        #expect(mov.text == "mov rax, qword ptr [rip + 0x10]")
        #expect(mov.isRIPRelative)
        #expect(!mov.isJump && !mov.isCall && mov.branchTarget == nil)
        let lea = try one([0x48, 0x8d, 0x3d, 0xf0, 0xff, 0xff, 0xff])
        #expect(lea.text == "lea rdi, [rip - 0x10]")
        #expect(lea.isRIPRelative)
        let eip = try one([0x67, 0x8b, 0x05, 0x00, 0x00, 0x00, 0x00])
        #expect(eip.text == "mov eax, dword ptr [eip]")
        #expect(eip.isRIPRelative)
        #expect(!(try one([0x48, 0x8b, 0x00])).isRIPRelative)       // mov rax, [rax]
        #expect(!(try one([0x8b, 0x04, 0x25, 0, 0x10, 0, 0])).isRIPRelative)  // absolute [0x1000]
        #expect(!(try one([0xb8, 1, 0, 0, 0])).isRIPRelative)
    }

    @Test func repPrefixFlagged() throws {
        let movsb = try one([0xf3, 0xa4])
        #expect(movsb.mnemonic == "rep movsb")
        #expect(movsb.hasRepPrefix)
        #expect(try one([0xf3, 0x48, 0xab]).hasRepPrefix)   // rep stosq
        #expect(try one([0xf2, 0xae]).hasRepPrefix)         // repne scasb
        #expect(try one([0xf3, 0xa6]).hasRepPrefix)         // repe cmpsb
        #expect(!(try one([0xa4])).hasRepPrefix)            // movsb alone
        #expect(!(try one([0xf3, 0x0f, 0x10, 0xc1])).hasRepPrefix)  // movss: mandatory f3
        #expect(!(try one([0xf3, 0x90])).hasRepPrefix)             // pause
        let bnd = try one([0xf2, 0xe9, 0x00, 0x00, 0x00, 0x00], at: 0x1000)   // bnd jmp: f2 is not rep
        #expect(bnd.text == "bnd jmp 0x1006")
        #expect(!bnd.hasRepPrefix && bnd.isJump && bnd.branchTarget == 0x1006)
    }

    @Test func syscallAndInterrupts() throws {
        let sys = try one([0x0f, 0x05])
        #expect(sys.text == "syscall")
        #expect(sys.isSyscall && !sys.isInterrupt && !sys.isCall)
        let int3 = try one([0xcc])
        #expect(int3.text == "int3")
        #expect(int3.isInterrupt && !int3.isSyscall)
        let int80 = try one([0xcd, 0x80])
        #expect(int80.text == "int 0x80")
        #expect(int80.isInterrupt && int80.isSyscall)
        let int3Long = try one([0xcd, 0x03])
        #expect(int3Long.text == "int 3")
        #expect(int3Long.isInterrupt && !int3Long.isSyscall)
        #expect(try one([0xf1]).isInterrupt)   // int1 / icebp
        #expect(!(try one([0x90])).isInterrupt)
        #expect(!(try one([0x90])).isSyscall)
    }

    @Test func endbr64() throws {
        let e = try one([0xf3, 0x0f, 0x1e, 0xfa])
        #expect(e.mnemonic == "endbr64")
        #expect(e.operands == "")
        #expect(e.text == "endbr64")
        #expect(e.isEndbr64)
        #expect(!e.hasRepPrefix && !e.isJump && !e.isInterrupt)
        let e32 = try one([0xf3, 0x0f, 0x1e, 0xfb])
        #expect(e32.mnemonic == "endbr32")
        #expect(!e32.isEndbr64)
        // A function prologue: endbr64; push rbp; mov rbp, rsp.
        let insns = dis.decode([0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5], at: 0x1139)
        #expect(insns.map(\.text) == ["endbr64", "push rbp", "mov rbp, rsp"])
        #expect(insns.map(\.address) == [0x1139, 0x113d, 0x113e])
        #expect(insns.map(\.isEndbr64) == [true, false, false])
    }

    @Test func endbr64OnI386() throws {
        let e = try #require(try Disassembler(.i386).decodeOne(X86_64.endbr64, at: 0x8048000))
        #expect(e.text == "endbr64")
        #expect(e.isEndbr64)
    }

    @Test func undecodableByteStopsDecoding() throws {
        // 0x06 (push es) does not exist in 64-bit mode.
        let insns = dis.decode([0x90, 0x90, 0x06, 0x90, 0xc3], at: 0x1000)
        #expect(insns.map(\.text) == ["nop", "nop"])
        #expect(insns.last?.end == 0x1002)
        #expect(dis.decodeOne([0x06], at: 0x1000) == nil)
        // A truncated instruction also stops: call with half its displacement.
        #expect(dis.decode([0x90, 0xe8, 0x00, 0x00], at: 0x1000).map(\.text) == ["nop"])
        #expect(dis.decode([], at: 0x1000).isEmpty)
        // endbr64's bytes cut short are not endbr64.
        #expect(dis.decode([0xf3, 0x0f, 0x1e], at: 0x1000).isEmpty)
    }

    @Test func maxCountAndAddresses() throws {
        let bytes: [UInt8] = [0x55, 0x48, 0x89, 0xe5, 0x31, 0xc0, 0x5d, 0xc3]
        let all = dis.decode(bytes, at: 0x7fff_0000_0000)
        #expect(all.map(\.text) == ["push rbp", "mov rbp, rsp", "xor eax, eax", "pop rbp", "ret"])
        #expect(all.map(\.address) == [0x7fff_0000_0000, 0x7fff_0000_0001, 0x7fff_0000_0004, 0x7fff_0000_0006, 0x7fff_0000_0007])
        #expect(all.map(\.size) == [1, 3, 2, 1, 1])
        #expect(all.flatMap(\.bytes) == bytes)
        #expect(dis.decode(bytes, at: 0x1000, maxCount: 2).map(\.text) == ["push rbp", "mov rbp, rsp"])
        #expect(dis.decode(bytes, at: 0x1000, maxCount: 100).count == 5)
        #expect(dis.decodeOne(bytes, at: 0x1000)?.text == "push rbp")
    }

    @Test func i386Decoding() throws {
        let d = try Disassembler(.i386)
        let call = try #require(d.decodeOne([0xe8, 0x1b, 0x00, 0x00, 0x00], at: 0xffff_fff0))
        #expect(call.isCall)
        #expect(call.branchTarget == 0x10)   // wraps modulo 2^32
        let int80 = try #require(d.decodeOne([0xcd, 0x80], at: 0x8048000))
        #expect(int80.isSyscall && int80.isInterrupt)
        let sysenter = try #require(d.decodeOne([0x0f, 0x34], at: 0x8048000))
        #expect(sysenter.text == "sysenter")
        #expect(sysenter.isSyscall)
        // 0x06 is push es in 32-bit mode.
        #expect(d.decodeOne([0x06], at: 0x8048000)?.text == "push es")
        #expect(try #require(d.decodeOne([0xf3, 0xa5], at: 0)).hasRepPrefix)
    }

    @Test func armDecodingGivesTextAndSize() throws {
        let a64 = try Disassembler(.aarch64)
        let insns = a64.decode([0xfd, 0x7b, 0xbf, 0xa9, 0xc0, 0x03, 0x5f, 0xd6, 0xff, 0xff, 0xff, 0xff], at: 0x1000)
        #expect(insns.map(\.text) == ["stp x29, x30, [sp, #-0x10]!", "ret"])
        #expect(insns.map(\.size) == [4, 4])
        let a32 = try Disassembler(.arm32)
        #expect(a32.decodeOne([0x1e, 0xff, 0x2f, 0xe1], at: 0x8000)?.text == "bx lr")
    }

    @Test func descriptionAndEquality() throws {
        let insn = try one([0xe9, 0xfb, 0xff, 0xff, 0xff], at: 0x401000)
        #expect(insn.description == "0x401000: e9 fb ff ff ff  jmp 0x401000")
        #expect(insn == (try one([0xe9, 0xfb, 0xff, 0xff, 0xff], at: 0x401000)))
        #expect(insn != (try one([0xe9, 0xfb, 0xff, 0xff, 0xff], at: 0x401001)))
    }

    /// What the patch planner's mid-function check counts as moving the stack (capstone's text).
    @Test func changesStackPointer() throws {
        let moves: [[UInt8]] = [
            [0x55],                          // push rbp
            [0x5d],                          // pop rbp
            [0x9c],                          // pushfq
            [0x48, 0x83, 0xec, 0x18],        // sub rsp, 0x18
            [0x48, 0x83, 0xe4, 0xf0],        // and rsp, -0x10
            [0x48, 0x89, 0xec],              // mov rsp, rbp
            [0x48, 0x8d, 0x65, 0xf8],        // lea rsp, [rbp - 8]
            [0x48, 0x94],                    // xchg rsp, rax (capstone may print either order)
            [0x48, 0x87, 0xe0],              // xchg rax, rsp
            [0xc9],                          // leave
            [0xc8, 0x10, 0x00, 0x00],        // enter 0x10, 0
        ]
        for bytes in moves {
            let insn = try one(bytes)
            #expect(insn.changesStackPointer, "\(insn.text)")
        }
        let neutral: [[UInt8]] = [
            [0x48, 0x89, 0xe5],              // mov rbp, rsp (reads rsp)
            [0xf3, 0x0f, 0xb8, 0xc3],        // popcnt eax, ebx
            [0xc3],                          // ret: leaves; code after it is another path
            [0xe8, 0x00, 0x00, 0x00, 0x00],  // call: the stack is as before once it returns
            [0x8b, 0x44, 0x24, 0x08],        // mov eax, dword ptr [rsp + 8]
            [0xf3, 0x0f, 0x1e, 0xfa],        // endbr64
        ]
        for bytes in neutral {
            let insn = try one(bytes)
            #expect(!insn.changesStackPointer, "\(insn.text)")
        }
    }
}
