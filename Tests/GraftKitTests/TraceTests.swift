import Dispatch
import Foundation
import Glibc
import GraftKit
import Testing
import TestSupport

typealias TraceRun = SessionRun<TraceSession>

extension SessionRun where Session == TraceSession {
    /// Started when the breakpoint is armed (`--function`) or the first step was reported.
    convenience init(_ session: TraceSession) {
        self.init(session, startsWith: { event in
            switch event {
            case .armed, .step: return true
            default: return false
            }
        })
    }

    var steps: [TraceStep] { events.compactMap { if case .step(let step) = $0 { return step } else { return nil } } }

    /// A `.traceProgress` came (without step events: 8192 instructions were stepped).
    var progressReported: Bool { events.contains { if case .traceProgress = $0 { return true } else { return false } } }
}

/// (calls, self, total) per function name.
func figures(_ summary: TraceSummary) -> [String: [UInt64]] {
    var out: [String: [UInt64]] = [:]
    for stats in summary.profile.functionStats() {
        out[stats.function.name ?? stats.function.displayName] = [stats.calls, stats.selfCount, stats.total]
    }
    return out
}

/// Folded stacks as `a;b count` lines.
func foldedLines(_ summary: TraceSummary) -> [String] {
    summary.profile.foldedStacks().map { $0.frames.joined(separator: ";") + " \($0.count)" }
}

/// Single-step traces of real victims. trace_calls' functions are hand-written assembly whose
/// instruction counts are known exactly (TestTargets/README.md) and recounted by gdb here.
@Suite struct TraceTests {
    /// One call of trace_a: total 113 = trace_a 53 + trace_b 3 × 11 + trace_leaf 3 × 6 + trace_sys 9.
    static let oneCall: [String: [UInt64]] = [
        "trace_a": [1, 53, 113], "trace_b": [3, 33, 51], "trace_leaf": [3, 18, 18], "trace_sys": [1, 9, 9],
    ]

    func launchCalls(_ mode: String = "") throws -> Victim {
        try Victim.launch("trace_calls", arguments: [mode, "120"], stdin: true)
    }

    @Test func functionCallCountsAndFoldedStacksAreExact() throws {
        let victim = try launchCalls()
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "trace_a"), journal: temporaryJournal()))
        try #require(run.waitStarted())
        victim.writeStdin("go\n")
        let summary = try run.waitEnd()
        #expect(summary.end == .callsTraced)
        #expect(summary.callsTraced == 1)
        #expect(summary.steps == 113)
        #expect(figures(summary) == Self.oneCall)
        #expect(foldedLines(summary) == ["trace_a 53", "trace_a;trace_b 33", "trace_a;trace_b;trace_leaf 18", "trace_a;trace_sys 9"])
        // Every step was reported, in order, the syscall among them.
        let steps = run.steps
        #expect(steps.count == 113)
        #expect(steps.map(\.index) == Array(1...113))
        #expect(steps.first?.function.name == "trace_a" && steps.first?.offset == 0)
        #expect(steps.last?.function.name == "trace_a")
        #expect(summary.codeRestored)
        // The process goes on: the traced call returned its value, the next one runs untraced.
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 1 83" }) != nil)
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 2 95" }) != nil)
        #expect(victim.procStatus("TracerPid") == "0")
        expectCodeRestored(victim, ["trace_a"])
    }

    /// The reference: gdb `stepi` through the same call on the same binary.
    @Test func gdbCountsTheSame() throws {
        let script = try #require(repositoryPath("TestTargets/trace_reference.py"))
        let result = try runCommand("/usr/bin/gdb", ["-nx", "-batch", "-x", script, "--args", try Victims.path("trace_calls")],
                                    input: "go\n", timeout: 120)
        let line = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("{\"event\":\"reference\"") }, "\(result.stdout)\(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let functions = try #require(object["functions"] as? [String: [String: Int]])
        #expect(object["total"] as? Int == 113)
        for (name, expected) in Self.oneCall {
            #expect(functions[name]?["calls"] == Int(expected[0]) && functions[name]?["self"] == Int(expected[1]), "\(name): \(functions[name] ?? [:])")
        }
    }

    @Test(arguments: [1, 2])
    func depthStepsOverDeeperCalls(depth: Int) throws {
        let victim = try launchCalls()
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "trace_a", depth: depth, reportSteps: false),
                                        journal: temporaryJournal()))
        try #require(run.waitStarted())
        victim.writeStdin("go\n")
        let summary = try run.waitEnd()
        let stats = Dictionary(uniqueKeysWithValues: summary.profile.functionStats().map { ($0.function.name ?? "?", $0) })
        if depth == 1 {
            // trace_b and trace_sys ran at full speed: counted as calls, their instructions not.
            #expect(summary.steps == 53)
            #expect(stats["trace_a"]?.total == 53 && stats["trace_a"]?.selfCount == 53)
            #expect(stats["trace_b"]?.calls == 3 && stats["trace_b"]?.steppedOver == 3 && stats["trace_b"]?.selfCount == 0)
            #expect(stats["trace_sys"]?.calls == 1 && stats["trace_sys"]?.steppedOver == 1)
            #expect(stats["trace_leaf"] == nil)
        } else {
            #expect(summary.steps == 53 + 33 + 9)
            #expect(stats["trace_a"]?.total == 95)
            #expect(stats["trace_b"]?.total == 33 && stats["trace_b"]?.steppedOver == 0)
            #expect(stats["trace_leaf"]?.calls == 3 && stats["trace_leaf"]?.steppedOver == 3)
        }
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 1 83" }) != nil)
        // The return breakpoints are gone too.
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 2 95" }) != nil)
        expectCodeRestored(victim, ["trace_a", "trace_b", "trace_sys", "main"])
    }

    @Test func recursionAndSeveralCalls() throws {
        let victim = try launchCalls()
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "trace_fact", calls: 2, reportSteps: false),
                                        journal: temporaryJournal()))
        try #require(run.waitStarted())
        victim.writeStdin("rec\n")
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "fact 5 120" }) != nil)
        victim.writeStdin("rec 2\n")
        let summary = try run.waitEnd()
        #expect(summary.callsTraced == 2)
        // trace_fact(5): 6 calls, 15·5 + 12 = 87; trace_fact(2): 3 calls, 42.
        #expect(figures(summary)["trace_fact"] == [9, 129, 129])
        #expect(summary.profile.treeLines().count == 6)  // depths 0…5 under the two roots
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "fact 2 2" }) != nil)
        expectCodeRestored(victim, ["trace_fact"])
    }

    /// SIGUSR1 every 200 µs at the traced thread: the handler runs inside the traced calls (and is
    /// traced), no signal is lost, and the traced functions' own counts stay exact.
    @Test func signalsArriveDuringTheTrace() throws {
        let victim = try launchCalls("signals")
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "trace_a", calls: 2, reportSteps: false),
                                        journal: temporaryJournal()))
        try #require(run.waitStarted())
        victim.writeStdin("go\n")
        let first = victim.waitForLine(timeout: 10, where: { $0.hasPrefix("usr1 ") }).flatMap { Int($0.dropFirst(5)) }
        victim.writeStdin("go\n")
        let summary = try run.waitEnd()
        let counts = figures(summary)
        #expect(counts["trace_a"]?[1] == 106 && counts["trace_b"]?[1] == 66 && counts["trace_leaf"]?[1] == 36 && counts["trace_sys"]?[1] == 18,
                "\(counts)")
        #expect(counts["trace_a"]?[0] == 2 && counts["trace_b"]?[0] == 6)
        #expect(summary.signalsDelivered > 0)
        #expect(counts["trace_handler"].map { $0[0] } == UInt64(summary.signalsDelivered), "handler entries = signals delivered")
        let second = victim.waitForLine(timeout: 10, where: { $0.hasPrefix("usr1 ") }).flatMap { Int($0.dropFirst(5)) }
        #expect((first ?? 0) > 0 && (second ?? 0) > (first ?? 0))
        #expect(victim.isAlive)
        expectCodeRestored(victim, ["trace_a"])
    }

    /// Other threads compute and fork every 2 ms while one call is traced.
    @Test func otherThreadsRunAndForkMeanwhile() throws {
        let victim = try launchCalls("busy")
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "trace_a", calls: 3, reportSteps: false),
                                        journal: temporaryJournal()))
        try #require(run.waitStarted())
        for _ in 0..<3 { victim.writeStdin("go\n") }
        let summary = try run.waitEnd()
        #expect(figures(summary) == Self.oneCall.mapValues { [$0[0] * 3, $0[1] * 3, $0[2] * 3] })
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 3 107" }) != nil)
        #expect(victim.isAlive)
        #expect(victim.procStatus("TracerPid") == "0")
        expectCodeRestored(victim, ["trace_a"])
    }

    /// --all-stop: the other threads do not run while the call is traced.
    @Test func allStopHoldsTheOtherThreads() throws {
        let victim = try launchCalls("busy")
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "trace_a", reportSteps: false, allStop: true),
                                        journal: temporaryJournal()))
        try #require(run.waitStarted())
        victim.writeStdin("go\n")
        let summary = try run.waitEnd()
        #expect(figures(summary) == Self.oneCall)
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 1 83" }) != nil)
        #expect(victim.isAlive && victim.procStatus("TracerPid") == "0")
    }

    /// Default mode: step a busy worker thread for exactly N instructions, seeded with its stack.
    @Test func stepsAThreadForNInstructions() throws {
        let victim = try Victim.launch("trace_busy", arguments: ["2", "120"])
        defer { victim.kill() }
        let tids = try #require(victim.waitForLine(timeout: 10, where: { $0.hasPrefix("tids ") })).split(separator: " ").dropFirst().compactMap { Int32($0) }
        let worker = try #require(tids.first)
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(tid: worker, steps: 2000, disassemble: true),
                                        journal: temporaryJournal()))
        let summary = try run.waitEnd()
        #expect(summary.steps == 2000)
        #expect(summary.end == .count)
        #expect(summary.tid == worker)
        let steps = run.steps
        #expect(steps.count == 2000 && steps.allSatisfy { $0.tid == worker && $0.text != nil })
        let names = Set(steps.compactMap(\.function.name))
        #expect(names.isSuperset(of: ["busy_outer", "busy_inner"]), "\(names)")
        // The shadow stack was seeded from the thread's real stack: the worker's frames are roots.
        #expect(summary.profile.foldedStacks().allSatisfy { $0.frames.contains("worker") }, "\(foldedLines(summary).prefix(3))")
        let inner = try #require(summary.profile.functionStats().first { $0.function.name == "busy_inner" })
        #expect(inner.calls > 0 && inner.selfCount > 0)
        #expect(victim.isAlive && victim.procStatus("TracerPid") == "0")
        #expect(victim.procStatus("State")?.hasPrefix("t") == false)
    }

    /// SIGKILL to the process mid-trace: the stepped worker often reports its death first, and the
    /// trace said "thread T exit … process P running". A thread killed by a signal is the process.
    @Test func aProcessKilledMidTraceIsReportedAsKilled() throws {
        for _ in 0..<3 {
            let victim = try Victim.launch("trace_busy", arguments: ["2", "120"])
            defer { victim.kill() }
            let tids = try #require(victim.waitForLine(timeout: 10, where: { $0.hasPrefix("tids ") })).split(separator: " ").dropFirst().compactMap { Int32($0) }
            let worker = try #require(tids.first)
            let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(tid: worker, reportSteps: false), journal: temporaryJournal()))
            try waitUntil("the first 8192 steps") { run.progressReported }
            Glibc.kill(victim.pid, SIGKILL)
            let summary = try run.waitEnd()
            #expect(summary.end == .targetExited(.killed(signal: SIGKILL)), "\(summary.end)")
        }
    }

    /// Ending mid-trace (what Ctrl-C does): the thread is left running, nothing traced remains.
    @Test func stopMidTraceLeavesTheThreadRunning() throws {
        let victim = try Victim.launch("trace_busy", arguments: ["1", "120"])
        defer { victim.kill() }
        let tid = try #require(victim.waitForLine(timeout: 10, where: { $0.hasPrefix("tids ") })).split(separator: " ").dropFirst().compactMap { Int32($0) }.first
        for round in 0..<5 {
            let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(tid: tid, reportSteps: round % 2 == 0), journal: temporaryJournal()))
            // Under way: a step event, or without them the first progress report (every 8192 steps).
            try waitUntil("round \(round): the trace to step") { run.progressReported || !run.steps.isEmpty }
            // Not a synchronisation: each round ends at another moment of the stepping.
            usleep(UInt32(round * 37_000))
            let summary = try run.finish()
            #expect(summary.end == .requested)
            #expect(summary.steps > 0)
            #expect(victim.isAlive, "round \(round)")
        }
        try waitUntil("the victim to be detached") { victim.procStatus("TracerPid") == "0" || !victim.isAlive }
        #expect(victim.isAlive && victim.procStatus("TracerPid") == "0")
        let state = victim.procStatus("State") ?? ""
        #expect(state.hasPrefix("R") || state.hasPrefix("S"), "\(state)")
        expectCodeRestored(victim, ["busy_outer", "busy_inner"])
    }

    @Test func errorsAreSpecific() throws {
        let victim = try launchCalls()
        defer { victim.kill() }
        #expect(throws: (any Error).self) {
            try TraceSession(pid: victim.pid, options: TraceOptions(tid: 1), journal: temporaryJournal()).run(onEvent: { _ in })
        }
        do {
            _ = try TraceSession(pid: victim.pid, options: TraceOptions(function: "no_such_fn"), journal: temporaryJournal()).run(onEvent: { _ in })
            Issue.record("tracing a missing function must fail")
        } catch {
            #expect("\(error)".contains("no_such_fn"))
        }
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 1 83" }) != nil)
    }
}

/// A file of the repository (the package root is found from this source file's path).
func repositoryPath(_ relative: String) -> String? {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    let path = url.appendingPathComponent(relative).path
    return access(path, R_OK) == 0 ? path : nil
}

/// --all-stop holds threads the stepped thread creates, too.
@Suite struct TraceAllStopTests {
    @Test func threadsCreatedDuringAnAllStopTraceAreHeld() throws {
        // hook_count spawn: after `go` the main thread creates 4 threads that make 40 calls and
        // exit; main joins them and prints `calls 40 …`. Held, they cannot finish while main is traced.
        let victim = try Victim.launch("hook_count", arguments: ["40", "4", "spawn", "120"], stdin: true)
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(duration: 4, reportSteps: false, allStop: true),
                                        journal: temporaryJournal()))
        // Armed: every thread is stopped until graft resumes them under its control, so `go` cannot
        // be read before the hold is in place.
        try #require(run.waitStarted(timeout: 60), "the trace did not start: \(run.events)")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 1.5, where: { $0.hasPrefix("calls ") }) == nil, "threads ran while --all-stop held the process")
        // AffinityHold: the stepped thread is confined to graft's CPU; the threads it created
        // (held now) got the process's own mask back, not the narrow one they inherited.
        let original = allowedCPUs(victim.pid, victim.pid)
        if sysconf(Int32(_SC_NPROCESSORS_ONLN)) > 1 {
            // The stepped main thread creates them one by one (slowly, under load): at least one.
            func tasks() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(victim.pid)/task")) ?? [] }
            try waitUntil("a thread created while main is stepped", timeout: 2) { tasks().count >= 2 }
            for task in tasks() where task != String(victim.pid) {
                #expect(allowedCPUs(victim.pid, Int32(task) ?? 0) == "0-\(sysconf(Int32(_SC_NPROCESSORS_ONLN)) - 1)",
                        "thread \(task) created while main was stepped kept graft's mask")
            }
            #expect(original?.contains("-") == false && original?.contains(",") == false, "the stepped thread is not confined: \(original ?? "?")")
        }
        let summary = try run.waitEnd()
        #expect(summary.end == .duration && summary.steps > 0)
        #expect(allowedCPUs(victim.pid, victim.pid) == "0-\(sysconf(Int32(_SC_NPROCESSORS_ONLN)) - 1)", "the stepped thread's mask was not put back")
        #expect(victim.waitForLine(timeout: 10, where: { $0.hasPrefix("calls ") }) == "calls 40 sum \(4 * 40 * 41)")
    }
}
