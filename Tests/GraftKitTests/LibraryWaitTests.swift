import Glibc
import GraftCore
import GraftKit
import Testing
import TestSupport

/// Hooks in a library loaded after the session started (issue 14: "a dlopen'd library's function
/// hooked before it loads"): armed at the loader's `_dl_debug_state`, exact counts from the first call.
@Suite(.serialized) struct LibraryWaitTests {
    func launchLater(_ calls: Int) throws -> Victim {
        try Victim.launch("dlopen_later", arguments: [try Victims.path("liblate.so"), String(calls)], stdin: true)
    }

    @Test func aHookWaitsForItsLibraryAndSeesEveryCall() throws {
        let victim = try launchLater(1000)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "liblate:late_f", argumentCount: 1, returns: true)],
                                      limits: HookLimits(count: 10), journal: temporaryJournal()))
        try #require(run.waitArmed(), "session did not start")
        try waitUntil("the waiting notice") {
            run.notices.contains { $0.contains("liblate is not loaded in process \(victim.pid) yet: liblate:late_f is hooked when the process loads it") }
        }
        #expect(run.armedHooks.isEmpty)
        victim.writeStdin("go\n")
        let summary = try run.waitEnd()
        #expect(run.armedHooks.map(\.function) == ["liblate.so!late_f"])
        #expect(run.hits.map { $0.arguments[0] } == Array(1...10))  // from the very first call
        #expect(run.returns.map { $0.value & 0xffff_ffff } == (1...10).map { UInt64(2 * $0) })
        #expect(summary.hooks[0].function == "liblate.so!late_f" && summary.hooks[0].hits == 10)
        #expect(summary.codeRestored)
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "late 1000 sum 1001000" }) != nil, "\(victim.transcript)")
        #expect(victim.waitExit(timeout: 10) == 0)
    }

    @Test func noWaitRefusesAndAMissingFunctionIsANotice() throws {
        let victim = try launchLater(100_000)
        defer { victim.kill() }
        let refused = HookSession(pid: victim.pid, specs: [HookSpec(location: "liblate:late_f")], journal: temporaryJournal())
        refused.waitsForLibraries = false
        #expect { _ = try refused.run(onEvent: { _ in }) } throws: { "\($0)".contains("no module 'liblate'") }
        // The library appears without the function: said once, the other hook goes on.
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "liblate:no_such_function"), HookSpec(location: "liblate:late_f")],
                                      limits: HookLimits(count: 5), journal: temporaryJournal()))
        try #require(run.waitArmed())
        victim.writeStdin("go\n")
        let summary = try run.waitEnd()
        #expect(run.notices.contains { $0.contains("liblate was loaded, but liblate:no_such_function cannot be hooked") })
        #expect(summary.hooks[1].hits == 5 && summary.hooks[0].hits == 0)
        #expect(victim.waitForLine(timeout: 30, where: { $0.hasPrefix("late 100000 ") }) != nil)
    }

    /// dlclose then dlopen again: the second load is hooked too (its fresh mapping has no int3), the
    /// counts go on, and nothing is written where the library was while it is unloaded.
    @Test func aLibraryLoadedAgainAfterDlcloseIsHookedAgain() throws {
        let victim = try Victim.launch("dlopen_later", arguments: [try Victims.path("liblate.so"), "5", "120", "reopen"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "liblate:late_f", argumentCount: 1)],
                                      limits: HookLimits(count: 10), journal: temporaryJournal()))
        try #require(run.waitArmed(), "session did not start")
        victim.writeStdin("go\ngo\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "closed" }) != nil, "\(victim.transcript)")
        try waitUntil("the unloaded notice") { run.notices.contains { $0.contains("liblate.so was unloaded: liblate:late_f is hooked again") } }
        victim.writeStdin("go\n")
        let summary = try run.waitEnd()
        #expect(run.hits.map { $0.arguments[0] } == Array(1...5) + Array(1...5))
        #expect(summary.hooks[0].hits == 10)
        #expect(summary.codeRestored)
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "again 5 sum 30" }) != nil, "\(victim.transcript)")
        #expect(victim.waitExit(timeout: 10) == 0)
    }

    /// The session ends while the library is unloaded: its code is not written (it is not there).
    @Test func theSessionEndsCleanlyWhileTheLibraryIsUnloaded() throws {
        let victim = try Victim.launch("dlopen_later", arguments: [try Victims.path("liblate.so"), "5", "120", "reopen"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "liblate:late_f")], journal: temporaryJournal()))
        try #require(run.waitArmed(), "session did not start")
        victim.writeStdin("go\ngo\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "closed" }) != nil, "\(victim.transcript)")
        try waitUntil("five calls") { run.hits.count == 5 }
        let summary = try run.finish()
        #expect(summary.codeRestored, "\(run.notices)")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "again 5 sum 30" }) != nil, "\(victim.transcript)")
        #expect(victim.waitExit(timeout: 10) == 0)
    }

    /// A library loaded before the session (no loader breakpoint) and dlclosed during it: teardown
    /// finds no int3 of graft's there and writes nothing (the old byte would land in whatever is
    /// mapped there by then).
    @Test func aLibraryUnloadedDuringTheSessionIsNotWritten() throws {
        let victim = try Victim.launch("dlopen_later", arguments: [try Victims.path("liblate.so"), "5", "120", "reopen"], stdin: true)
        defer { victim.kill() }
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "late 5 sum 30" }) != nil, "\(victim.transcript)")
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "liblate:late_f")], journal: temporaryJournal()))
        try #require(run.waitArmed(), "session did not start")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "closed" }) != nil, "\(victim.transcript)")
        let summary = try run.finish()
        #expect(summary.codeRestored, "\(run.notices)")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "again 5 sum 30" }) != nil, "\(victim.transcript)")
        #expect(victim.waitExit(timeout: 10) == 0)
    }

    /// Static musl and Go programs have no loader to wait for (static glibc has one: it can dlopen).
    @Test(arguments: ["static_loop_musl", "go_loop"]) func aProgramWithoutALoaderCannotLoadOne(name: String) throws {
        let victim = try Victim.launch(name)
        defer { victim.kill() }
        let session = HookSession(pid: victim.pid, specs: [HookSpec(location: "libz:inflate")], journal: temporaryJournal())
        #expect { _ = try session.run(onEvent: { _ in }) } throws: { "\($0)".contains("no dynamic loader") }
    }
}
