import Glibc
import GraftKit
import Testing
import TestSupport

/// Every refusal: the right error, and memory left byte-identical to the file.
@Suite struct RefusalTests {
    /// Runs `attempt` against `victimName`, expects `matches` on the error, and checks that `function`
    /// still holds exactly the file's bytes and that nothing was journaled.
    func refused(_ victimName: String, arguments: [String] = [], function: String,
                 _ matches: (GraftError) -> Bool, attempt: (Graft, Int32) throws -> Void,
                 sourceLocation: SourceLocation = #_sourceLocation) throws {
        let victim = try Victim.launch(victimName, arguments: arguments)
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let before = try functionBytes(pid: victim.pid, function)
        expectError(matches, { try attempt(graft, victim.pid) }, sourceLocation: sourceLocation)
        let after = try functionBytes(pid: victim.pid, function)
        #expect(after.memory == before.memory, sourceLocation: sourceLocation)
        #expect(after.memory == after.file, sourceLocation: sourceLocation)
        #expect(try graft.list(pid: victim.pid).isEmpty, sourceLocation: sourceLocation)
        #expect(victim.isAlive, sourceLocation: sourceLocation)
    }

    @Test func notAnInstructionBoundary() throws {
        // value_a starts with 55 (push rbp) and 48 89 e5 (mov rbp, rsp): +2 is inside the second.
        try refused("c_loop", function: "value_a", {
            if case .notInstructionBoundary(_, let function, let previous, let next) = $0 {
                return function == "c_loop!value_a" && next - previous == 3
            }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "value_a+2", action: .returnValue(1)) }
    }

    /// A jump into its own bytes: to the entry (an endless loop), into the middle of the new
    /// bytes (SIGILL; refused even with --mid-function, which lets it past the stack check), or to
    /// a kept endbr64 that runs straight into the jump.
    @Test(arguments: [("c_loop", "value_a", false), ("c_loop", "value_a+4", true), ("c_loop_endbr", "value_a", false)])
    func aJumpIntoItsOwnBytes(victim: String, target: String, midFunction: Bool) throws {
        try refused(victim, function: "value_a", {
            if case .targetInsidePatch(let described, let start, let end) = $0 { return described.hasPrefix("\(victim)!value_a") && end > start }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "value_a", action: .jump(to: target), midFunction: midFunction) }
    }

    /// A `--to` target inside another function gets the LOCATION's checks: after `push rbp` the
    /// target's `pop rbp; ret` would return through the wrong slot (SIGSEGV before the check).
    @Test func aJumpTargetAfterAStackChangeOrOffABoundary() throws {
        try refused("c_loop", function: "value_a", {
            if case .targetMidFunction(let target, let reason) = $0 { return target == "c_loop!value_c+0x4" && reason.contains("push rbp") }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "value_a", action: .jump(to: "value_c+4")) }
        try refused("c_loop", function: "value_a", {
            if case .notInstructionBoundary(_, let function, _, _) = $0 { return function == "c_loop!value_c" }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "value_a", action: .jump(to: "value_c+2")) }
        // --mid-function lets the same target through (dry run: nothing written either way).
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let plan = try Graft(journal: temporaryJournal()).patch(pid: victim.pid, location: "value_a", action: .jump(to: "value_c+4"), dryRun: true, midFunction: true)
        #expect(plan.plan.checks.contains { $0.hasPrefix("--mid-function: 'push rbp'") }, "\(plan.plan.checks)")
    }

    /// An IFUNC's code is the resolver: patched to return 0, the next module that binds it would call
    /// address 0. A LOCATION inside the resolver (`libc:wcsncmp+4`) is refused — at its entry graft
    /// patches the implementation the process uses instead (IFUNCCLITests) — and a jump *to* an
    /// IFUNC is refused.
    @Test func ifuncSymbolsAreRefused() throws {
        func isIFUNC(_ name: String) -> (GraftError) -> Bool {
            { if case .ifuncSymbol(let function, _, let pid) = $0 { return function == name && pid != nil }; return false }
        }
        try refused("c_loop", function: "libc:wcsncmp", isIFUNC("libc.so.6!wcsncmp")) { graft, pid in _ = try graft.patch(pid: pid, location: "libc:wcsncmp+4", action: .returnValue(0)) }
        try refused("c_loop", function: "value_a", isIFUNC("libc.so.6!strlen")) { graft, pid in _ = try graft.patch(pid: pid, location: "value_a", action: .jump(to: "libc:strlen")) }
    }

    @Test func functionTooShortForAJump() throws {
        try refused("tiny_funcs", function: "tiny_ret", {
            if case .functionTooShort(_, let size, let needed) = $0 { return size == 1 && needed == 5 }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "tiny_ret", action: .jump(to: "tiny_xor")) }
    }

    @Test func functionTooShortForAReturnStub() throws {
        try refused("tiny_funcs", function: "tiny_four", {
            if case .functionTooShort(_, let size, let needed) = $0 { return size == 4 && needed == 6 }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "tiny_four", action: .returnValue(1)) }
    }

    @Test func branchIntoThePatchedBytes() throws {
        try refused("branch_back", function: "loop_into_head", {
            if case .branchIntoPatch(_, let to, let function) = $0 { return function == "branch_back!loop_into_head" && to > 0 }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "loop_into_head", action: .returnValue(0)) }
    }

    @Test func returnAddressInsideThePatchedBytes() throws {
        // A thread sleeps in slow_callee, called by `call *%rdi` at call_head+0: its return address is
        // call_head+2, inside the 3 bytes of `xor eax, eax; ret`.
        var callHead: UInt64 = 0
        try refused("call_in_head", function: "call_head", {
            if case .returnAddressInsidePatch(_, let ret) = $0 { return callHead != 0 && ret == callHead + 2 }
            return false
        }) { graft, pid in
            callHead = try functionBytes(pid: pid, "call_head").address
            _ = try graft.patch(pid: pid, location: "call_head", action: .returnValue(0))
        }
    }

    /// The journal of an earlier process that had the same PID claims a patch whose "new" bytes are
    /// what this process has at value_a: keyed by PID alone, unpatch would write that record's
    /// "original" bytes (`mov eax, 5; ret`) into this process. Keyed by PID and start time, graft
    /// never sees it.
    @Test func aJournalOfAnEarlierProcessWithTheSamePIDIsNeverUsed() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let journal = temporaryJournal()
        let graft = Graft(journal: journal)
        let current = try ProcessInstance.current(victim.pid)
        _ = try graft.patch(pid: victim.pid, location: "value_a", action: .returnValue(5))
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        var contents = try journal.load(current)
        var record = try #require(contents.patches.first)
        (record.originalBytes, record.newBytes) = (record.newBytes, record.originalBytes)
        record.state = .applied
        contents.patches = []
        try journal.save(contents, for: current)
        contents.patches = [record]
        contents.startTime = current.startTime - 1
        try journal.save(contents, for: ProcessInstance(pid: victim.pid, startTime: current.startTime - 1))
        expectLine(victim, { $0 == "a=1" })
        _ = victim.drain()  // the a=5 lines of the set-up patch

        #expect(try graft.list(pid: victim.pid).isEmpty)
        #expect(try graft.unpatch(pid: victim.pid, ids: nil).isEmpty)
        let bytes = try functionBytes(pid: victim.pid, "value_a")
        #expect(bytes.memory == bytes.file)
        expectLine(victim, { $0 == "a=1" })
        #expect(!victim.drain().contains("a=5"))
    }

    @Test func symbolNotFoundSuggestsCloseNames() throws {
        try refused("c_loop", function: "value_a", {
            if case .symbolNotFound(let name, _, let suggestions) = $0 { return name == "value_aa" && suggestions.contains("value_a") }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "value_aa", action: .returnValue(1)) }
    }

    @Test func jumpTargetNotFound() throws {
        try refused("c_loop", function: "value_a", {
            if case .symbolNotFound(let name, _, _) = $0 { return name == "no_such_function" }
            return false
        }) { graft, pid in _ = try graft.patch(pid: pid, location: "value_a", action: .jump(to: "no_such_function")) }
    }

    @Test func addressNotExecutable() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let stack = try #require(try ProcMaps.read(pid: victim.pid).first(where: { $0.path == "[stack]" }))
        expectError({ if case .addressNotExecutable = $0 { return true }; return false }) {
            _ = try graft.patch(pid: victim.pid, location: hex(stack.start + 64), action: .returnValue(0))
        }
        expectError({ if case .addressNotMapped(let a) = $0 { return a == 0x10 }; return false }) {
            _ = try graft.patch(pid: victim.pid, location: "0x10", action: .returnValue(0))
        }
    }

    @Test func alreadyPatchedIsSaidInsteadOfStacking() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        _ = try graft.patch(pid: victim.pid, location: "value_a", action: .jump(to: "value_b"))
        let patched = try functionBytes(pid: victim.pid, "value_a").memory
        expectError({ if case .alreadyPatched(_, let id, _, let pid) = $0 { return id == 1 && "\($0)".contains("graft unpatch -p \(pid) 1") }; return false }) {
            _ = try graft.patch(pid: victim.pid, location: "value_a", action: .returnValue(5))
        }
        #expect(try functionBytes(pid: victim.pid, "value_a").memory == patched)
        #expect(try graft.list(pid: victim.pid).count == 1)
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
    }

    @Test func someoneElsesBreakpointIsRefused() throws {
        // A 60 s interval: the victim called value_a once at start and now sleeps, so the int3 is never hit.
        let victim = try Victim.launch("c_loop", arguments: ["60000"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0 == "a=1" }, "the one call of value_a before the 60 s sleep is over")
        let start = try functionBytes(pid: victim.pid, "value_a").address
        // Put an int3 where a debugger would, as another tool.
        let tracee = try Tracee.attach(pid: victim.pid)
        let original = try tracee.readMemory(at: start + 1, count: 1)
        try tracee.writeText(at: start + 1, bytes: [0xcc])
        try tracee.detach()
        // value_a is not called between these lines: the victim only calls it while running;
        // keep the window short and restore before the test ends.
        defer {
            if let t = try? Tracee.attach(pid: victim.pid) {
                try? t.writeText(at: start + 1, bytes: original)
                try? t.detach()
            }
        }
        expectError({
            if case .unexpectedBytes(_, _, let found, let hint) = $0 { return found.contains(0xcc) && hint.contains("int3") }
            return false
        }) {
            _ = try graft.patch(pid: victim.pid, location: "value_a", action: .returnValue(5))
        }
    }

    @Test func noSuchProcessAndZombie() throws {
        let graft = Graft(journal: temporaryJournal())
        let victim = try Victim.launch("c_loop")
        let pid = victim.pid
        victim.signal(SIGKILL)
        // Not reaped yet: a zombie.
        try waitUntil("c_loop \(pid) to become a zombie") { ProcFS.status(pid)?["State"]?.hasPrefix("Z") == true }
        expectError({ $0 == .zombie(pid: pid) }) { _ = try graft.patch(pid: pid, location: "value_a", action: .returnValue(0)) }
        victim.kill()
        expectError({ $0 == .noSuchProcess(pid: pid) }) { _ = try graft.patch(pid: pid, location: "value_a", action: .returnValue(0)) }
    }

    @Test func alreadyTracedNamesTheTracer() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let holder = try Tracee.attach(pid: victim.pid)
        defer { try? holder.detach() }
        let me = getpid()
        expectError({
            if case .alreadyTraced(_, let tracer, let name) = $0 { return tracer == me && !name.isEmpty }
            return false
        }) { _ = try Tracee.attach(pid: victim.pid) }
    }
}
