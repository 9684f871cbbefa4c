import Dispatch
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

/// What the first hook tests left out: signals while a thread runs an out-of-line copy, returns of
/// many threads at once, and the --duration end.
@Suite struct HookMoreTests {
    /// hook_f+4 (`mov %edi,-0x4(%rbp)`) runs from a copy in a scratch page. SIGUSR1 every 50 µs —
    /// and with storm-call the handler itself calls hook_f — must neither lose a hit nor a signal.
    @Test(arguments: ["storm", "storm-call"])
    func signalsDuringOutOfLineStepsAreDeliveredAfterThem(mode: String) throws {
        let victim = try Victim.launch("hook_signals", arguments: ["5000", mode], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "hook_f+4")], journal: temporaryJournal()))
        try #require(run.waitArmed())
        #expect(run.armedHooks.first?.strategy == "out of line", "\(run.armedHooks.map(\.strategy))")
        victim.writeStdin("go\n")
        let line = try #require(victim.waitForLine(timeout: 60, where: { $0.hasPrefix("calls ") }))
        let summary = try run.waitEnd()
        let numbers = parseInts(line)  // calls N usr1 K trap 2
        #expect(numbers.count == 3 && numbers[0] == 5000 && numbers[1] > 0 && numbers[2] == 2, "\(line)")
        let expected = mode == "storm-call" ? 5000 + numbers[1] : 5000
        #expect(summary.hooks[0].hits == expected)
        #expect(summary.end == .targetExited(.exited(code: 0)))
    }

    /// 8 threads in hook_f at once: every return is paired with its own call (value = a + g = 8i).
    @Test func returnsOfEightThreadsPairWithTheirCalls() throws {
        let victim = try Victim.launch("hook_count", arguments: ["8000", "8"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "hook_f", argumentCount: 1, returns: true)], journal: temporaryJournal()))
        try #require(run.waitArmed())
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 60, where: { $0.hasPrefix("calls ") }) == "calls 8000 sum \(4 * 8000 * 8001)")
        let summary = try run.waitEnd()
        #expect(summary.hooks[0].hits == 8000 && summary.hooks[0].returns == 8000)
        // Per thread, calls and returns alternate (hook_f is a leaf): the k-th return of a thread
        // carries 8 × the k-th call's first argument.
        var callsByThread: [Int32: [UInt64]] = [:], returnsByThread: [Int32: [UInt64]] = [:]
        for event in run.events {
            switch event {
            case .hit(let hit): callsByThread[hit.tid, default: []].append(hit.arguments[0])
            case .returned(let value): returnsByThread[value.tid, default: []].append(value.value)
            default: break
            }
        }
        #expect(callsByThread.count == 8)
        for (tid, calls) in callsByThread {
            #expect(returnsByThread[tid] == calls.map { $0 * 8 }, "thread \(tid)")
        }
    }

    @Test func durationEndsTheSession() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let start = DispatchTime.now()
        let summary = try HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "value_a")], limits: HookLimits(duration: 2),
                                              journal: temporaryJournal())).waitEnd()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        #expect(summary.end == .duration)
        #expect(summary.hooks[0].hits > 10 && seconds < 10)
        // --duration counts from the arming, and so do the summary's seconds: never less than asked.
        #expect(summary.elapsedNanoseconds >= 2_000_000_000, "\(summary.elapsedNanoseconds)")
        expectCodeRestored(victim, ["value_a"])
    }
}
