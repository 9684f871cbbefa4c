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

    /// hook_jumper longjmps out of every odd call, from one call site: the next call enters at
    /// the same stack slot with the same return address. Only the even calls return, each once
    /// (the abandoned call was reported as returning with its successor's value and time).
    @Test func aCallLeftByLongjmpIsNotReportedAsReturning() throws {
        let victim = try Victim.launch("hook_tail", arguments: ["100", "120"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "hook_jumper", argumentCount: 1, returns: true)],
                                      journal: temporaryJournal()))
        try #require(run.waitArmed())
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0.hasPrefix("jump ") }) == "jump 100 sum 2550")
        let summary = try run.waitEnd()
        #expect(summary.hooks[0].hits == 100)
        #expect(summary.hooks[0].returns == 50)
        #expect(run.returns.map(\.value) == stride(from: 2, through: 100, by: 2).map { UInt64($0) })
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
        // Read up to the first unhooked call's `a=1` after the changed ones (or the end of output).
        var lines: [String] = []
        while let line = victim.readLine(timeout: 10) {
            lines.append(line)
            if line == "a=1" && lines.contains("a=7") { break }
        }
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

    /// A process that creates ~5,000 threads a second: at arming and at teardown some thread is
    /// stopped inside clone. graft's remote mmap/munmap ran on such a thread (the main one), the
    /// kernel then finished the clone with graft's registers, clone3 failed and glibc's clone retry
    /// ran the new thread's start routine twice (thread_churn prints `DUP N`), or the target died.
    @Test func scratchPagesNeverBreakAThreadCreation() throws {
        let victim = try Victim.launch("thread_churn", arguments: ["120"])
        defer { victim.kill() }
        for round in 0..<8 {
            let spec = HookSpec(location: "churn_f", returns: round % 2 == 1)
            let run = HookRun(HookSession(pid: victim.pid, specs: [spec], limits: HookLimits(duration: 0.3), journal: temporaryJournal()))
            let summary = try run.waitEnd()
            #expect(summary.codeRestored, "round \(round)")
            #expect(victim.isAlive, "round \(round): \(victim.exitStatus.map(WaitStatus.describe) ?? "")")
            guard victim.isAlive else { break }
        }
        // Everything printed so far, and on to two `churn` reports (every 20 ms) printed after the
        // last session: a thread started twice prints DUP when it runs.
        var lines = victim.drain()
        var reports = 0
        while reports < 2, let line = victim.readLine(timeout: 10) {
            lines.append(line)
            if line.hasPrefix("churn ") { reports += 1 }
        }
        #expect(!lines.contains { $0.hasPrefix("DUP") }, "\(lines.filter { $0.hasPrefix("DUP") }.prefix(3))")
        #expect(reports == 2, "the victim goes on")
        expectCodeRestored(victim, ["churn_f"])
    }

    /// A process already stopped (SIGSTOP) when the session starts: the scratch page's remote mmap
    /// single-stepped its only thread out of the group stop, PTRACE_LISTEN then failed, and the
    /// thread stayed in a ptrace stop for good — SIGCONT did nothing and the teardown waited for
    /// ever. Now no remote call runs on a group-stopped thread (the push is emulated instead):
    /// stopped, it stays stopped through the session; continued, it runs hooked.
    @Test(arguments: [false, true]) func aProcessStoppedBeforeTheSession(continuedDuring: Bool) throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        victim.signal(SIGSTOP)
        try waitUntil("c_loop to stop (SIGSTOP)") { victim.procStatus("State")?.hasPrefix("T") == true }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "value_a")], limits: HookLimits(duration: 1),
                                      journal: temporaryJournal()))
        #expect(run.waitArmed())
        #expect(run.armedHooks.first?.strategy == "emulated (push)", "\(run.armedHooks)")
        if continuedDuring {
            // Not a synchronisation: the session runs a while with the process stopped (what is tested).
            usleep(200_000)
            victim.signal(SIGCONT)
        }
        let summary = try run.waitEnd(timeout: 20)
        #expect(summary.end == .duration && summary.codeRestored)
        if continuedDuring {
            #expect(summary.hooks[0].hits > 3, "\(summary.hooks[0].hits)")
        } else {
            #expect(summary.hooks[0].hits == 0)
            // A time to observe, not to wait for: a process wrongly resumed would show it by now.
            usleep(100_000)
            #expect(victim.procStatus("State")?.hasPrefix("T") == true, "\(victim.procStatus("State") ?? "")")
            victim.signal(SIGCONT)
        }
        _ = victim.drain()
        #expect(victim.waitForLine("a=1", timeout: 5), "the process runs again")
        #expect(victim.procStatus("TracerPid") == "0")
        expectCodeRestored(victim, ["value_a"])
    }

    /// The out-of-line push under fire: 8 threads call `hot` (push rbp first) in a tight loop, so at
    /// every teardown some are inside its scratch copy or at the int3. 12 rounds of a counting
    /// session (the PEEKUSER/POKEUSER fast path) and of a reporting one, ended mid-flight: every
    /// round the code equals the file again, no scratch page stays mapped, and every thread's
    /// counter keeps moving.
    @Test func outOfLinePushTeardownUnderEightHotThreads() throws {
        let victim = try Victim.launch("threads_hot", arguments: ["8"])
        defer { victim.kill() }
        func counters() -> [UInt64]? {
            _ = victim.drain()
            guard let line = victim.waitForLine(timeout: 5, where: { $0.hasPrefix("counters ") }) else { return nil }
            return line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        }
        func scratchPages() -> Int {
            // graft's scratch pages: anonymous r-x mappings (the victim has none of its own).
            (readTextFile("/proc/\(victim.pid)/maps") ?? "").split(separator: "\n").filter { line in
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                return fields.count == 5 && fields[1] == "r-xp"
            }.count
        }
        #expect(scratchPages() == 0)
        var last = try #require(counters())
        for round in 0..<12 {
            let session = HookSession(pid: victim.pid, specs: [HookSpec(location: "hot")], journal: temporaryJournal())
            session.reportsCalls = round % 2 == 1
            let run = HookRun(session)
            #expect(run.waitArmed(), "round \(round)")
            #expect(run.armedHooks.first?.strategy == "out of line", "round \(round): \(run.armedHooks.map(\.strategy))")
            // Hitting has begun (a loaded machine may not run the threads for a while after arming)…
            try waitUntil("round \(round): a first hit") { session.hitsSoFar > 0 }
            // …and, not a synchronisation: each round ends at another moment of the hitting.
            usleep(UInt32(20_000 + round * 7_000))
            let summary = try run.finish()
            #expect(summary.codeRestored && summary.totalHits > 0, "round \(round): \(summary.totalHits) hits")
            #expect(victim.isAlive, "round \(round)")
            expectCodeRestored(victim, ["hot"])
            #expect(scratchPages() == 0, "round \(round): a scratch page is still mapped")
            let now = try #require(counters(), "round \(round)")
            #expect(now.count == 8 && zip(now, last).allSatisfy { $0 > $1 }, "round \(round): \(last) -> \(now)")
            last = now
        }
    }

    /// With several threads hitting, the tracer thread must not be SCHED_IDLE: most of the hitting
    /// threads sit in their ptrace stops, so /proc/loadavg looks idle, yet once resumed they spin,
    /// and an idle-class tracer among them got almost no CPU (sessions stalled for seconds). The
    /// policy is field 41 of the tracer thread's /proc stat (5 = SCHED_IDLE).
    @Test func severalHittingThreadsKeepTheTracerOutOfSchedIdle() throws {
        let victim = try Victim.launch("threads_hot", arguments: ["8"])
        defer { victim.kill() }
        for quiet in [true, false] {
            let session = HookSession(pid: victim.pid, specs: [HookSpec(location: "hot")], journal: temporaryJournal())
            session.reportsCalls = !quiet
            let run = HookRun(session)
            #expect(run.waitArmed())
            // Past the first SCHED_IDLE decision: the tracer thread is known and not idle-class.
            try waitUntil("quiet \(quiet): the tracer thread out of SCHED_IDLE") {
                session.tracerThreadID != 0 && schedulingPolicy(session.tracerThreadID).map { $0 != 5 } == true
            }
            var policies: [Int] = []
            for _ in 0..<20 {
                let tid = session.tracerThreadID
                if tid != 0, let stat = readTextFile("/proc/self/task/\(tid)/stat"), let close = stat.lastIndex(of: ")") {
                    let fields = stat[stat.index(after: close)...].split(separator: " ")
                    if fields.count > 38, let policy = Int(fields[38]) { policies.append(policy) }  // field 41
                }
                usleep(25_000)  // sampling over half a second: the policy must stay out of SCHED_IDLE
            }
            let summary = try run.finish()
            #expect(summary.codeRestored && summary.totalHits > 0)
            #expect(!policies.isEmpty && !policies.contains(5), "quiet \(quiet): tracer policies \(policies)")
        }
        expectCodeRestored(victim, ["hot"])
    }
}

/// The scheduling policy of thread `tid` of this process (field 41 of its /proc stat; 5 = SCHED_IDLE).
func schedulingPolicy(_ tid: Int32) -> Int? {
    guard let stat = readTextFile("/proc/self/task/\(tid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 38 ? Int(fields[38]) : nil
}
