import Glibc
import GraftCore
import GraftKit
import Testing
import TestSupport

/// `hook --hardware` and `watch`: breakpoints in the debug registers. Exact counts with threads that
/// exist and threads created later, no byte of code changed while armed, the fifth refused, and every
/// thread's registers cleared at the end (a thread left with DR7 set would die of SIGTRAP at its next
/// call: the victims go on calling after the session and must exit 0).
@Suite(.serialized) struct HardwareHookTests {
    func hardwareSession(_ victim: Victim, _ specs: [HookSpec], limits: HookLimits = HookLimits()) -> HookSession {
        let session = HookSession(pid: victim.pid, specs: specs, limits: limits, journal: temporaryJournal())
        session.hardware = true
        return session
    }

    @Test(arguments: [(4000, 4, ""), (4000, 4, "spawn")])
    func exactCountWithThreads(calls: Int, threads: Int, mode: String) throws {
        let victim = try Victim.launch("hook_count", arguments: [String(calls), String(threads)] + (mode.isEmpty ? [] : [mode]), stdin: true)
        defer { victim.kill() }
        let before = try functionBytes(pid: victim.pid, "hook_f")
        let run = HookRun(hardwareSession(victim, [HookSpec(location: "hook_f", argumentCount: 7)]))
        try #require(run.waitArmed(), "session did not arm")
        #expect(run.armedHooks.first?.strategy == "debug register DR0")
        // Armed, and memory still equals the file: no int3.
        let during = try functionBytes(pid: victim.pid, "hook_f")
        #expect(during.memory == before.file)
        victim.writeStdin("go\n")
        let line = try #require(victim.waitForLine(timeout: 60, where: { $0.hasPrefix("calls ") }), "\(victim.transcript)")
        let summary = try run.waitEnd()
        #expect(parseInts(line) == [calls, 4 * calls * (calls + 1)], "\(line)")
        #expect(summary.hooks[0].hits == calls)
        #expect(Set(run.hits.map(\.tid)).count == threads)
        // Arguments read as with int3 hooks: (i, 2i, …, 7i), the 7th from the stack.
        for hit in run.hits.prefix(50) {
            let i = hit.arguments[0]
            #expect(hit.arguments == (1...7).map { UInt64($0) * i })
        }
        if case .targetExited(let status) = summary.end { #expect(status == .exited(code: 0)) } else { Issue.record("ended by \(summary.end)") }
    }

    @Test func returnsUseSpareRegistersAndEveryThreadIsClearedAfterwards() throws {
        // 400,000 calls: the session ends after 2,000 while the four threads go on calling hook_f.
        let victim = try Victim.launch("hook_count", arguments: ["400000", "4", "spawn"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(hardwareSession(victim, [HookSpec(location: "hook_f", argumentCount: 1, returns: true)],
                                          limits: HookLimits(count: 2_000)))
        try #require(run.waitArmed(), "session did not arm")
        victim.writeStdin("go\n")
        let summary = try run.waitEnd()
        #expect(summary.end == .count)
        #expect(summary.hooks[0].hits == 2_000)
        // Every counted call's return was caught (the session drains them) with its value 8i.
        let byThread = Dictionary(grouping: run.hits, by: \.tid)
        let returns = Dictionary(grouping: run.returns, by: \.tid)
        for (tid, hits) in byThread {
            let values = returns[tid]?.map { Int32(truncatingIfNeeded: $0.value) } ?? []
            #expect(values.count == hits.count)
            #expect(values == hits.prefix(values.count).map { Int32(8 * $0.arguments[0]) })
        }
        // The threads go on: with a debug register left armed they would die of SIGTRAP.
        let line = try #require(victim.waitForLine(timeout: 60, where: { $0.hasPrefix("calls ") }), "\(victim.transcript)")
        #expect(parseInts(line) == [400_000, 4 * 400_000 * 400_001])
        #expect(victim.waitExit(timeout: 10) == 0)
    }

    /// A vfork child's exec clears its own debug registers, not the parent's: the return address of
    /// the parent's call that vforked (in a spare register) is still graft's when the call returns.
    /// Forgetting it delivered the trap, and the parent died of SIGTRAP.
    @Test func aVforkChildsExecLeavesTheParentsReturnRegister() throws {
        let victim = try Victim.launch("hook_fork", arguments: ["vfork"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(hardwareSession(victim, [HookSpec(location: "vfork_true", returns: true)]))
        try #require(run.waitArmed(), "session did not arm")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "parent done" }) != nil, "\(victim.transcript)")
        try waitUntil("vfork_true's return") { run.returns.count == 1 }
        let summary = try run.finish()
        #expect(summary.end == .requested, "\(summary.end)")
        #expect(summary.hooks[0].hits == 1 && summary.hooks[0].returns == 1)
        #expect(run.returns.first?.tid == victim.pid)
        #expect(victim.transcript.contains("child status 0"))
    }

    @Test func aFifthIsRefusedByNameAndNothingIsArmed() throws {
        let victim = try Victim.launch("c_loop", arguments: ["10"])
        defer { victim.kill() }
        let session = HookSession(pid: victim.pid, specs: ["value_a", "value_b", "value_c", "add", "main"].map { HookSpec(location: $0) },
                                  journal: temporaryJournal())
        session.hardware = true
        #expect {
            _ = try session.run(onEvent: { _ in })
        } throws: { error in
            let text = "\(error)"
            return text.contains("four debug registers") && text.contains("main cannot have one")
        }
        expectLine(victim, { $0 == "a=1" })
        // Three hooks and --returns fit; four with --returns do not.
        let four = HookSession(pid: victim.pid, specs: ["value_a", "value_b", "value_c", "add"].map { HookSpec(location: $0, returns: true) },
                               journal: temporaryJournal())
        four.hardware = true
        #expect { _ = try four.run(onEvent: { _ in }) } throws: { "\($0)".contains("hook at most three") }
        expectLine(victim, { $0 == "a=1" })
    }

    // MARK: - Watchpoints

    func watchSession(_ victim: Victim, _ spec: WatchSpec, limits: HookLimits = HookLimits()) -> HookSession {
        let session = HookSession(pid: victim.pid, specs: [], limits: limits, journal: temporaryJournal())
        session.watch = spec
        return session
    }

    func watchHits(_ run: HookRun) -> [WatchHit] {
        run.events.compactMap { if case .watched(let hit) = $0 { return hit } else { return nil } }
    }

    @Test(arguments: ["", "spawn"])
    func everyWriteOfFourThreadsWithTheWriterAndItsBacktrace(mode: String) throws {
        let victim = try Victim.launch("watch_target", arguments: ["300", "4"] + (mode.isEmpty ? [] : [mode]), stdin: true)
        defer { victim.kill() }
        let run = HookRun(watchSession(victim, WatchSpec(location: "counter", backtrace: true)))
        try #require(run.waitArmed(), "session did not arm")
        victim.writeStdin("go\n")
        let line = try #require(victim.waitForLine(timeout: 60, where: { $0.hasPrefix("counter ") }), "\(victim.transcript)")
        let summary = try run.waitEnd()
        #expect(line == "counter 1200 read-only")
        let hits = watchHits(run)
        #expect(summary.totalHits == 1200)
        #expect(hits.count == 1200)
        #expect(Set(hits.map(\.tid)).count == 4)
        #expect(hits.allSatisfy { $0.length == 8 && $0.function.hasPrefix("watch_target!bump+") && $0.instruction?.hasPrefix("lock xadd") == true })
        #expect(hits.allSatisfy { hit in hit.backtrace.contains { $0.function == "writer_thread" } })
        // The last write seen leaves the value the victim printed.
        #expect(hits.last?.newValue == 1200)
        // peek() only reads: a write watch does not report it.
        #expect(!hits.contains { $0.function.contains("peek") })
    }

    @Test func accessWatchReportsReadsAndTheSessionEndsCleanly() throws {
        let victim = try Victim.launch("watch_target", arguments: ["5", "1"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(watchSession(victim, WatchSpec(location: "watch_target:counter", condition: .access)))
        try #require(run.waitArmed(), "session did not arm")
        victim.writeStdin("go\n")
        _ = try #require(victim.waitForLine(timeout: 30, where: { $0.hasPrefix("counter ") }))
        _ = try run.waitEnd()
        let hits = watchHits(run)
        // Five locked adds (each a read and a write: one trap) and peek()'s read.
        #expect(hits.count == 6)
        #expect(hits.last.map { $0.function.hasPrefix("watch_target!peek") && !$0.changed } == true)
    }

    @Test func watchRefusalsAreSpecific() throws {
        let victim = try Victim.launch("watch_target", arguments: ["5", "1"], stdin: true)
        defer { victim.kill() }
        func refusal(_ spec: WatchSpec) -> String {
            do {
                _ = try watchSession(victim, spec).run(onEvent: { _ in })
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal(WatchSpec(location: "counter+1", length: 4)).contains("not aligned to 4 bytes"))
        #expect(refusal(WatchSpec(location: "flag")).contains("read-only mapping"))
        #expect(refusal(WatchSpec(location: "bump")).contains("is a function, not a variable"))
        #expect(refusal(WatchSpec(location: "countr")).contains("counter"))  // did you mean
        // A variable longer than 8 bytes: its first 8 are watched, with a notice.
        let run = HookRun(watchSession(victim, WatchSpec(location: "small"), limits: HookLimits(count: 1)))
        try #require(run.waitArmed())
        try waitUntil("the notice about small's size") { run.notices.contains { $0.contains("small is 16 bytes") && $0.contains("first 8") } }
        victim.writeStdin("go\n")
        _ = try run.waitEnd()
        let hits = watchHits(run)
        #expect(hits.count == 1 && hits.first?.newValue == 5 << 32)  // small[1] = 5: bytes 4–7 of the 8 watched
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "counter 5 read-only" }) != nil)
    }
}
