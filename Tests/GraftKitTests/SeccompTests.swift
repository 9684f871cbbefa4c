import Glibc
import GraftCore
import GraftKit
import Testing
import TestSupport

/// A hook whose first instruction must run out of line needs a scratch page, which graft maps with
/// a remote mmap inside the target. Under a seccomp filter that punishes that mmap, graft must ask
/// the filter first and not make the call: the target keeps running and computes what it would have.
@Suite(.serialized) struct SeccompTests {
    static let done = "seccomp done 5250 5150"  // N = 100

    /// Hooks shape_riprel (out of line only) in a hook_seccomp victim with `action`; returns the
    /// session's error (nil when it armed) after the victim ran its calls to the end.
    private func hookRiprel(action: String, expectArmed: Bool, filtersBefore: Int = 0) throws -> (any Error)? {
        let victim = try Victim.launch("hook_seccomp", arguments: [action, "100", "120", String(filtersBefore)], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "shape_riprel"), HookSpec(location: "shape_push")],
                                      journal: temporaryJournal()))
        let armed = run.waitArmed()
        #expect(armed == expectArmed, "\(run.events)")
        var failure: (any Error)?
        if !armed {
            do { _ = try run.finish() } catch { failure = error }
            expectCodeRestored(victim, ["shape_riprel", "shape_push"])
        }
        victim.writeStdin("go\n")
        let line = victim.waitForLine(timeout: 20, where: { $0.hasPrefix("seccomp done") })
        #expect(line == SeccompTests.done, "victim said \(line ?? "nothing"); stderr: \(victim.stderrOutput)")
        if !armed {
            let status = victim.waitExit(timeout: 10)
            #expect(status.flatMap(WaitStatus.exitCode) == 0, "victim status \(String(describing: status))")
        } else {
            let summary = try run.waitEnd()
            #expect(summary.end == .targetExited(.exited(code: 0)))
            #expect(summary.hooks.map(\.hits) == [100, 100], "\(summary.hooks)")
            #expect(run.armedHooks.first { $0.location == "shape_riprel" }?.strategy == "out of line")
        }
        return failure
    }

    @Test(arguments: ["kill", "trap"])
    func aFilterThatWouldPunishTheMmapIsAskedFirst(action: String) throws {
        let failure = try hookRiprel(action: action, expectArmed: false)
        let text = (failure as? GraftError)?.description ?? "\(String(describing: failure))"
        #expect(text.contains("graft will not call mmap inside process"), "\(text)")
        #expect(text.contains(action == "kill" ? "kill the process (SECCOMP_RET_KILL_PROCESS)" : "SIGSYS (SECCOMP_RET_TRAP)"), "\(text)")
        #expect(text.contains("shape_riprel"), "the refusal names the hook: \(text)")
    }

    /// The rule in the newest of 600 filters (PTRACE_SECCOMP_GET_FILTER's index 0 is the oldest).
    @Test func theNewestOfManyFiltersIsRead() throws {
        let failure = try hookRiprel(action: "kill", expectArmed: false, filtersBefore: 600)
        let text = (failure as? GraftError)?.description ?? "\(String(describing: failure))"
        #expect(text.contains("kill the process (SECCOMP_RET_KILL_PROCESS)"), "\(text)")
    }

    @Test func aFilterThatFailsTheMmapRefusesTheHookCleanly() throws {
        let failure = try hookRiprel(action: "errno", expectArmed: false)
        let text = (failure as? GraftError)?.description ?? "\(String(describing: failure))"
        #expect(text.contains("shape_riprel") && text.contains("EPERM"), "\(text)")
    }

    @Test func aFilterThatAllowsTheMmapLetsTheHookRunOutOfLine() throws {
        #expect(try hookRiprel(action: "allow", expectArmed: true) == nil)
    }

    @Test func aPushIsEmulatedWhenTheFilterRefusesTheScratchPageAndReturnsSayWhy() throws {
        let victim = try Victim.launch("hook_seccomp", arguments: ["kill", "100"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "shape_push", returns: true)], journal: temporaryJournal()))
        try #require(run.waitArmed(), "\(run.events)")
        #expect(run.armedHooks.first?.strategy != "out of line", "\(run.armedHooks)")
        victim.writeStdin("go\n")
        let line = victim.waitForLine(timeout: 20, where: { $0.hasPrefix("seccomp done") })
        #expect(line == SeccompTests.done, "victim said \(line ?? "nothing")")
        let summary = try run.waitEnd()
        #expect(summary.hooks.first?.hits == 100, "\(summary.hooks)")
        // The return site's instruction (`cltq`) can only run out of line: returns are not
        // reported, with a notice that says why, rather than a page the filter would punish.
        #expect(summary.hooks.first?.returns == 0, "\(summary.hooks)")
        #expect(run.notices.contains { $0.contains("are not reported") && $0.contains("its seccomp filter would kill the process") }, "\(run.notices)")
        #expect(summary.end == .targetExited(.exited(code: 0)))
    }
}
