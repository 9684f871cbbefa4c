import Glibc
@testable import GraftKit
import Testing
import TestSupport

/// The target dies while graft holds it stopped (SIGKILL from outside, in the middle of the stop
/// window): patch and unpatch fail with "process N exited during the operation (killed by SIGKILL)",
/// no patch is left recorded as applied, and graft's tracer thread is not stuck.
@Suite struct TargetExitTests {
    /// A Graft whose stop window kills the target before the first read or write.
    func killingGraft() -> Graft {
        var graft = Graft(journal: temporaryJournal())
        graft.insideStopWindow = { tracee in
            let pid = tracee.pid
            kill(pid, SIGKILL)
            // Dead before graft's first read or write: every thread a zombie (graft's tracer
            // thread, which reaps them, is here) or gone.
            do {
                try waitUntil("process \(pid) to die of SIGKILL (\(procThreadStates(pid)))") {
                    procThreadStates(pid).values.allSatisfy { $0 == "Z" || $0 == "X" }
                }
            } catch {
                Issue.record("\(error)")
            }
        }
        return graft
    }

    func expectExited(_ pid: Int32, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
        expectError({
            if case .processExited(let p, let status) = $0 { return p == pid && status == "killed by SIGKILL" }
            return false
        }, body, sourceLocation: sourceLocation)
    }

    /// The victim is dead and reaped. This test process is both its parent and (through graft's tracer
    /// thread) its tracer, so graft's exit collection may have reaped it already.
    func expectGone(_ victim: Victim, sourceLocation: SourceLocation = #_sourceLocation) {
        if let status = victim.waitExit(timeout: 5) {
            #expect(WaitStatus.describe(status).contains("signal 9"), sourceLocation: sourceLocation)
        }
        #expect(kill(victim.pid, 0) != 0 && errno == ESRCH, sourceLocation: sourceLocation)
    }

    @Test func patchWhoseTargetDiesInTheStopWindow() throws {
        for victimName in ["c_loop", "threads_hot"] {
            let victim = try Victim.launch(victimName, arguments: victimName == "c_loop" ? ["5"] : ["8"])
            defer { victim.kill() }
            let graft = killingGraft()
            let location = victimName == "c_loop" ? "value_a" : "hot"
            let instance = try ProcessInstance.current(victim.pid)
            expectExited(victim.pid) { _ = try graft.patch(pid: victim.pid, location: location, action: .returnValue(7)) }
            expectGone(victim)
            // Nothing recorded: not even the intent entry.
            #expect(try graft.journal.load(instance).patches.isEmpty)
        }
    }

    @Test func unpatchWhoseTargetDiesInTheStopWindow() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let journal = temporaryJournal()
        let applied = try Graft(journal: journal).patch(pid: victim.pid, location: "value_a", action: .returnValue(7))
        #expect(applied.record != nil)
        var graft = killingGraft()
        graft.journal = journal
        expectExited(victim.pid) { _ = try graft.unpatch(pid: victim.pid, ids: nil) }
        expectGone(victim)
    }
}
