import Foundation
import Glibc
import GraftKit
import Testing
import TestSupport

/// `--signals step|skip`: signal handlers that interrupt a traced call are stepped, or run free while
/// the traced function's own counts stay exact.
@Suite struct TraceSignalTests {
    /// SIGUSR1 every 200 µs at the traced thread, handlers skipped: five calls of trace_a count
    /// exactly what they count without signals (no handler instructions), and the summary says how
    /// many handler runs went free. No signal is lost.
    @Test func skippedHandlersLeaveExactCounts() throws {
        let victim = try Victim.launch("trace_calls", arguments: ["signals", "120"], stdin: true)
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "trace_a", calls: 5, reportSteps: false, signals: .skip),
                                        journal: temporaryJournal()))
        try #require(run.waitStarted())
        victim.writeStdin("go\n")
        let first = victim.waitForLine(timeout: 10, where: { $0.hasPrefix("usr1 ") }).flatMap { Int($0.dropFirst(5)) }
        victim.writeStdin("go\ngo\ngo\ngo\n")
        let summary = try run.waitEnd()
        #expect(figures(summary) == TraceTests.oneCall.mapValues { [$0[0] * 5, $0[1] * 5, $0[2] * 5] })
        #expect(summary.signalsDelivered > 0)
        #expect(summary.handlersSkipped[SIGUSR1] == summary.signalsDelivered, "every delivered SIGUSR1 ran free: \(summary.handlersSkipped)")
        #expect(foldedLines(summary) == ["trace_a 265", "trace_a;trace_b 165", "trace_a;trace_b;trace_leaf 90", "trace_a;trace_sys 45"])
        let second = victim.waitForLine(timeout: 10, where: { $0.hasPrefix("usr1 ") }).flatMap { Int($0.dropFirst(5)) }
        #expect((first ?? 0) > 0 && (second ?? 0) > (first ?? 0))
        #expect(victim.isAlive)
        expectCodeRestored(victim, ["trace_a"])
    }

    /// The same with `--signals step`: every handler run is traced (and counted under trace_a), none
    /// skipped: the skip test's exact counts are not an accident of signals missing the calls.
    @Test func steppedHandlersAreTraced() throws {
        let victim = try Victim.launch("trace_calls", arguments: ["signals", "120"], stdin: true)
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "trace_a", calls: 2, reportSteps: false, signals: .step),
                                        journal: temporaryJournal()))
        try #require(run.waitStarted())
        victim.writeStdin("go\ngo\n")
        let summary = try run.waitEnd()
        let counts = figures(summary)
        #expect(summary.handlerRunsSkipped == 0)
        #expect(summary.signalsDelivered > 0)
        #expect(counts["trace_handler"].map { $0[0] } == UInt64(summary.signalsDelivered))
        #expect((counts["trace_a"]?[2] ?? 0) > 226, "handler instructions count under trace_a: \(counts)")
        #expect(victim.isAlive)
        expectCodeRestored(victim, ["trace_a"])
    }

    /// A Go function under asynchronous preemption: spin(5000) runs for seconds under single-step,
    /// so sysmon sends SIGURG every ~10 ms. By default (runtime signals skipped) the trace finishes
    /// with the function's exact count, 10n + 7 = 50007, and nothing of the runtime's handler or
    /// asyncPreempt in it.
    @Test func goFunctionUnderAsyncPreemptionFinishesExact() throws {
        let victim = try Victim.launch("go_busy", arguments: ["5000", "120"], stdin: true)
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(function: "main.spin", reportSteps: false),
                                        journal: temporaryJournal()))
        try #require(run.waitStarted())
        victim.writeStdin("go\n")
        let summary = try run.waitEnd(timeout: 120)
        #expect(summary.end == .callsTraced)
        #expect(figures(summary) == ["main.spin": [1, 50007, 50007]], "\(figures(summary))")
        #expect((summary.handlersSkipped[SIGURG] ?? 0) > 0, "async preemption fired while stepping: \(summary.handlersSkipped)")
        #expect(victim.waitForLine(timeout: 20, where: { $0.hasPrefix("spin ") }) != nil)
        #expect(victim.isAlive)
        // A second call, untraced, still runs right after graft left.
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 20, where: { $0.hasPrefix("spin ") }) != nil)
        expectCodeRestored(victim, ["main.spin"])
    }
}
