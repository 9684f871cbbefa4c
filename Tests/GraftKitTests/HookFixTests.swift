import Glibc
import GraftKit
import Testing
import TestSupport

/// Hook behaviours a user of the first version found wanting: tail calls, Go backtraces, the
/// returns of the last counted calls.
@Suite struct HookFixTests {
    /// hook_outer tail-jumps to hook_inner: both calls end at hook_inner's ret, and both returns
    /// must be reported (before, the outer one was never reported and its record leaked).
    @Test func bothSidesOfATailCallReturn() throws {
        let victim = try Victim.launch("hook_tail", arguments: ["100", "120"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "hook_outer", argumentCount: 1, returns: true),
                                                               HookSpec(location: "hook_inner", argumentCount: 1, returns: true)],
                                      journal: temporaryJournal()))
        try #require(run.waitArmed())
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0.hasPrefix("tail ") }) == "tail 100 sum 15550")
        let summary = try run.waitEnd()
        #expect(summary.hooks.map(\.hits) == [100, 100])
        #expect(summary.hooks.map(\.returns) == [100, 100])
        let outer = run.returns.filter { $0.location == "hook_outer" }
        let inner = run.returns.filter { $0.location == "hook_inner" }
        let expected: [UInt64] = (1...100).map { (i: Int) -> UInt64 in UInt64(3 * i + 4) }
        #expect(outer.map(\.value) == expected)
        #expect(inner.map(\.value) == outer.map(\.value))
    }

    /// Go binaries have no .eh_frame: the frame-pointer chain starts at the caller's caller when the
    /// hook is at a function's entry; graft puts the direct caller (the return address at rsp) back.
    @Test func goBacktraceNamesTheDirectCaller() throws {
        let victim = try Victim.launch("go_loop")
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "main.a", backtrace: true)],
                                      limits: HookLimits(count: 1), journal: temporaryJournal()))
        _ = try run.waitEnd()
        let names = try #require(run.hits.first).backtrace.compactMap(\.function)
        #expect(Array(names.prefix(3)) == ["main.a", "main.main", "runtime.main"], "\(names)")
    }

    /// --count N with --set-return: all N calls are changed and their returns reported.
    @Test func theLastCountedCallsReturnIsReported() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "value_a", returns: true, setReturn: 7)],
                                      limits: HookLimits(count: 3), journal: temporaryJournal()))
        let summary = try run.waitEnd()
        #expect(summary.end == .count)
        #expect(summary.hooks[0].hits == 3 && summary.hooks[0].returns == 3)
        #expect(run.returns.count == 3 && run.returns.allSatisfy { $0.returnedValue == 7 })
        usleep(100_000)
        let lines = victim.drain()
        #expect(lines.filter { $0 == "a=7" }.count == 3, "\(lines.suffix(12))")
        expectCodeRestored(victim, ["value_a"])
    }
}
