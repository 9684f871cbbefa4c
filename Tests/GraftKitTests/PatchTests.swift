import Glibc
import GraftKit
import Testing
import TestSupport

/// Jump patches against real running victims: the output changes, and reverting puts the file's
/// bytes back.
@Suite struct PatchTests {
    @Test(arguments: ["c_loop", "c_loop_nopie", "c_loop_stripped", "c_loop_endbr"])
    func jumpChangesOutputAndUnpatchRestoresTheFileBytes(victimName: String) throws {
        let victim = try Victim.launch(victimName)
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0 == "a=1" })
        let before = try functionBytes(pid: victim.pid, "value_a")
        #expect(before.memory == before.file)

        let outcome = try graft.patch(pid: victim.pid, location: "value_a", action: .jump(to: "value_b"))
        #expect(outcome.plan.encoding == "jmp rel32")
        #expect(outcome.record?.id == 1)
        if victimName == "c_loop_endbr" {
            #expect(outcome.plan.keptEndbr64)
            #expect(outcome.plan.address == before.address + 4)
            let during = try functionBytes(pid: victim.pid, "value_a")
            #expect(Array(during.memory.prefix(4)) == [0xf3, 0x0f, 0x1e, 0xfa])
        } else {
            #expect(!outcome.plan.keptEndbr64)
            #expect(outcome.plan.address == before.address)
        }
        expectLine(victim, { $0 == "a=2" }, "the patched process should print value_b's 2")

        let results = try graft.unpatch(pid: victim.pid, ids: nil)
        #expect(results.map(\.outcome) == [.reverted])
        expectLine(victim, { $0 == "a=1" }, "after unpatch value_a is back")
        let after = try functionBytes(pid: victim.pid, "value_a")
        #expect(after.memory == after.file)
        #expect(victim.isAlive)
    }

    @Test func returnStubChangesWhatTheFunctionReturns() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let outcome = try graft.patch(pid: victim.pid, location: "value_a", action: .returnValue(42))
        #expect(outcome.plan.newBytes == [0xb8, 42, 0, 0, 0, 0xc3])
        expectLine(victim, { $0 == "a=42" })
        let statuses = try graft.list(pid: victim.pid)
        #expect(statuses.map(\.state) == [.applied])
        _ = try graft.unpatch(pid: victim.pid, ids: [1])
        expectLine(victim, { $0 == "a=1" })
        #expect(try graft.list(pid: victim.pid).map(\.state) == [.reverted])
    }

    @Test func negativeReturnValueIsSignExtended() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        _ = try graft.patch(pid: victim.pid, location: "value_a", action: .returnValue(-7))
        expectLine(victim, { $0 == "a=-7" })
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
    }

    @Test func goFunctionIsRedirectedAsInTheFirstArticle() throws {
        let victim = try Victim.launch("go_loop")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0 == "a=1" })
        let outcome = try graft.patch(pid: victim.pid, location: "main.a", action: .jump(to: "main.b"))
        #expect(outcome.threadCount > 1, "a Go process has several threads, all stopped")
        expectLine(victim, { $0 == "a=2" })
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        expectLine(victim, { $0 == "a=1" })
        let after = try functionBytes(pid: victim.pid, "main.a")
        #expect(after.memory == after.file)
    }

    @Test func tinyFunctionTakesAReturnStubThatFits() throws {
        let victim = try Victim.launch("tiny_funcs")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0 == "tiny 0 7 5" })
        // tiny_six is 6 bytes: `mov eax, 9; ret` fits exactly.
        _ = try graft.patch(pid: victim.pid, location: "tiny_six", action: .returnValue(9))
        expectLine(victim, { $0 == "tiny 0 7 9" })
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        expectLine(victim, { $0 == "tiny 0 7 5" })
    }

    @Test func dryRunWritesNothingAndRecordsNothing() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let outcome = try graft.patch(pid: victim.pid, location: "value_a", action: .jump(to: "value_b"), dryRun: true)
        #expect(outcome.dryRun)
        #expect(outcome.record == nil)
        #expect(outcome.plan.newInstructions.first?.mnemonic == "jmp")
        #expect(outcome.plan.originalInstructions.first?.address == outcome.plan.address)
        let bytes = try functionBytes(pid: victim.pid, "value_a")
        #expect(bytes.memory == bytes.file)
        #expect(try graft.list(pid: victim.pid).isEmpty)
        expectLine(victim, { $0 == "a=1" })
    }

    /// The stress test: 8 threads call the function hot while graft applies and reverts the
    /// patch 500 times. The victim must never crash and every thread's counter must keep increasing.
    @Test func stressEightHotThreadsFiveHundredCycles() throws {
        let victim = try Victim.launch("threads_hot", arguments: ["8", "900"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        func counters() -> [UInt64]? {
            guard let line = victim.waitForLine(timeout: 5, where: { $0.hasPrefix("counters ") }) else { return nil }
            return line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        }
        var last = try #require(counters())
        #expect(last.count == 8)
        var stepped = 0
        for cycle in 0..<500 {
            let outcome = try graft.patch(pid: victim.pid, location: "hot", action: .jump(to: "hot_alt"))
            stepped += outcome.steppedThreads.count
            let results = try graft.unpatch(pid: victim.pid, ids: [outcome.record!.id])
            #expect(results.map(\.outcome) == [.reverted], "cycle \(cycle)")
            if cycle % 100 == 99 {
                #expect(victim.isAlive, "victim died at cycle \(cycle)")
                victim.drain()
                let now = try #require(counters())
                for (i, (a, b)) in zip(last, now).enumerated() {
                    #expect(b > a, "thread \(i) stopped making progress at cycle \(cycle)")
                }
                last = now
            }
        }
        #expect(victim.isAlive)
        let bytes = try functionBytes(pid: victim.pid, "hot")
        #expect(bytes.memory == bytes.file)
        print("stress: threads stepped out of the patch bytes \(stepped) times in 500 cycles")
    }

    /// Threads are created and exit all the time (thread_churn: ~5,000 a second) while graft lists
    /// /proc/PID/task, seizes and stops them: 150 apply/revert cycles must all succeed, every new
    /// thread must run the code as it is at its start, and none may stay stopped after a detach.
    @Test func threadsComingAndGoingDuringTheAttach() throws {
        let victim = try Victim.launch("thread_churn")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        for _ in 0..<150 {
            _ = try graft.patch(pid: victim.pid, location: "churn_f", action: .returnValue(5))
            _ = try graft.unpatch(pid: victim.pid, ids: nil)
        }
        _ = try graft.patch(pid: victim.pid, location: "churn_f", action: .returnValue(5))
        expectLine(victim, timeout: 5, { $0.hasPrefix("churn ") && $0.hasSuffix(" 5") }, "threads started after the patch run it")
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        expectLine(victim, timeout: 5, { $0.hasPrefix("churn ") && $0.hasSuffix(" 1") }, "and after the revert the original")
        let bytes = try functionBytes(pid: victim.pid, "churn_f")
        #expect(bytes.memory == bytes.file)
        // Nothing left in a ptrace stop ('t') and nothing traced: the churn goes on. Waited for,
        // not sampled after a fixed pause: a thread left stopped stays 't' and times this out.
        try waitUntil("no thread of \(victim.pid) in a ptrace stop (\(procThreadStates(victim.pid).filter { $0.value == "t" }.keys.sorted()) are)") {
            !procThreadStates(victim.pid).values.contains("t")
        }
        #expect(victim.procStatus("TracerPid") == "0")
        // A later report counts more threads (waited for: under load one 20 ms period may start none).
        var counts = (0..<2).compactMap { _ in victim.waitForLine(timeout: 2, where: { $0.hasPrefix("churn ") }).flatMap { parseInts($0).first } }
        try? waitUntil("thread_churn to start more threads") {
            if counts.count == 2 && counts[1] > counts[0] { return true }
            if counts.count == 2, let next = victim.waitForLine(timeout: 1, where: { $0.hasPrefix("churn ") }).flatMap({ parseInts($0).first }) {
                counts[1] = next
            }
            return counts.count < 2
        }
        #expect(counts.count == 2 && counts[1] > counts[0], "threads still start: \(counts)")
    }
}
