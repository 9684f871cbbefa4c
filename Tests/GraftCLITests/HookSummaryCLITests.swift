import Foundation
import Glibc
import Testing
import TestSupport

/// `graft hook --filter` and the summary's order (`--sort`) and length, end to end on real victims.
@Suite struct HookSummaryCLITests {
    /// hook_count 1000 calls over 4 threads, hook_f(i, 2i, …) returning 8i: exactly the calls the
    /// filter keeps are reported and counted, the others are counted as filtered out.
    @Test func filterKeepsExactlyTheMatchingCalls() throws {
        let cases: [(filter: String, extra: [String], kept: Int)] = [
            ("arg0 > 990", [], 10),                                // i = 991 … 1000
            ("arg1 == 0x64 || (arg0 >= 500 && arg0 < 0x1f8)", [], 5),  // i = 50, then 500 … 503
            ("ret <= 80 && ret != 8", ["--returns"], 9),           // 8i ≤ 80, i ≠ 1: i = 2 … 10
            ("pid == 1", [], 0),
        ]
        for (filter, extra, kept) in cases {
            let result = try runCommand(try graftBinary(), ["hook", "hook_f", "--args", "1", "--json", "--filter", filter] + extra +
                                        ["--state-dir", temporaryDirectory(), "--", try Victims.path("hook_count"), "1000", "4"], input: "go\n")
            #expect(result.status == 0, "\(result.stderr)")
            let lines = result.stdout.split(separator: "\n").map(String.init)
            #expect(lines.contains("calls 1000 sum \(4 * 1000 * 1001)"), "\(lines.suffix(3))")
            let events = try jsonLines(lines.filter { $0.hasPrefix("{") }.joined(separator: "\n"))
            let hits = events.filter { $0["event"] as? String == "hit" }
            #expect(hits.count == kept, "\(filter): \(hits.count) hits")
            // --args 1: the filter read arg1, the line shows one argument.
            #expect(hits.allSatisfy { ($0["args"] as? [[String: Any]])?.count == 1 }, "\(filter)")  // args are objects (typed arguments)
            if !extra.isEmpty {
                let returns = events.filter { $0["event"] as? String == "return" }
                #expect(returns.count == kept && Set(returns.compactMap { $0["value"] as? String }) == Set((2...10).map { "0x\(String(8 * $0, radix: 16))" }))
            }
            let summary = try #require(events.last)
            let hook = try #require((summary["hooks"] as? [[String: Any]])?.first)
            #expect(hook["hits"] as? Int == kept && summary["total_hits"] as? Int == kept, "\(summary)")
            #expect(summary["filtered_out"] as? Int == 1000 - kept, "\(summary)")
        }
    }

    /// Parameter names from the typed arguments (hook_count is built with -g: hook_f(a, b, … g)):
    /// `a > 995 && g != 7000` keeps i = 996 … 999; the lines show --args 1's one typed argument. A
    /// name the function lacks ends the session with an error naming its parameters.
    @Test func filterByParameterName() throws {
        let result = try runCommand(try graftBinary(), ["hook", "hook_f", "--args", "1", "--json", "--filter", "a > 995 && g != 7000",
                                                        "--state-dir", temporaryDirectory(), "--", try Victims.path("hook_count"), "1000", "2"],
                                    input: "go\n")
        #expect(result.status == 0, "\(result.stderr)")
        let events = try jsonLines(result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.joined(separator: "\n"))
        let hits = events.filter { $0["event"] as? String == "hit" }
        #expect(hits.count == 4, "\(hits)")
        #expect(hits.allSatisfy { ($0["args"] as? [[String: Any]])?.count == 1 && ($0["args"] as? [[String: Any]])?.first?["name"] as? String == "a" },
                "\(hits.first ?? [:])")
        let missing = try runCommand(try graftBinary(), ["hook", "hook_f", "--json", "--filter", "qty > 1", "--state-dir", temporaryDirectory(), "--",
                                                         try Victims.path("hook_count"), "10", "1"], input: "go\n")
        // Checked at the command's entry point, once its modules are mapped: the one-line error.
        expectOneLineError(missing, "--filter 'qty > 1': no field 'qty'")
        #expect(missing.stderr.contains("(their parameters: a, b, c, d, e, f, g)"), "\(missing.stderr)")
    }

    /// A thread's calls only: `--filter 'tid == T'` on 4 threads; `--count` counts matching calls.
    @Test func filterByThreadWithCount() throws {
        let victim = try Victim.launch("hook_count", arguments: ["100000", "4", "", "120"], stdin: true)
        defer { victim.kill() }
        let tids = victim.threadIDs.filter { $0 != victim.pid }
        let tid = try #require(tids.last)
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "-p", String(victim.pid), "hook_f", "--json", "--count", "25",
                                                                            "--filter", "tid == \(tid)", "--state-dir", temporaryDirectory()],
                                               waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 20, where: { $0.contains("\"event\":\"armed\"") }) != nil)
        victim.writeStdin("go\n")
        #expect(session.waitExit(timeout: 30).flatMap(WaitStatus.exitCode) == 0)
        let events = try jsonLines(session.drain().joined(separator: "\n"))
        let hits = events.filter { $0["event"] as? String == "hit" }
        #expect(hits.count == 25 && hits.allSatisfy { $0["tid"] as? Int == Int(tid) }, "\(hits.count)")
        let summary = try #require(events.last)
        #expect(summary["total_hits"] as? Int == 25 && summary["ended_by"] as? String == "--count", "\(summary)")
        #expect(victim.waitForLine("calls 100000 sum \(4 * 100000 * 100001)", timeout: 30), "every call ran, hooked or not")
    }

    /// Most calls first by default, whatever the command line's order; `--sort time` by time in
    /// the calls (`time_ns`), which needs --returns.
    @Test func summaryOrder() throws {
        for sort in [[], ["--sort", "time"]] {
            let result = try runCommand(try graftBinary(), ["hook", "hook_fact", "hook_fib", "--returns", "--json", "-q"] + sort +
                                        ["--state-dir", temporaryDirectory(), "--", try Victims.path("hook_recursive")], input: "go\n")
            #expect(result.status == 0, "\(result.stderr)")
            let summary = try #require(try jsonLines(result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.joined(separator: "\n")).last)
            let hooks = try #require(summary["hooks"] as? [[String: Any]])
            if sort.isEmpty {
                #expect(hooks.map { $0["hook"] as? String } == ["hook_fib", "hook_fact"] && hooks.map { $0["hits"] as? Int } == [177, 6])
            } else {
                let times = hooks.compactMap { $0["time_ns"] as? Int }
                #expect(times.count == 2 && times[0] >= times[1], "\(hooks)")
            }
        }
        let refused = try runCommand(try graftBinary(), ["hook", "-p", "1", "f", "--sort", "time"])
        expectOneLineError(refused, "--sort time needs --returns")
        let badFilter = try runCommand(try graftBinary(), ["hook", "-p", "1", "f", "--filter", "tid = 4"])
        expectOneLineError(badFilter, "--filter 'tid = 4': expected ==, !=, <, <=, > or >= at column 5 ('= 4')")
    }

    /// Text mode lists the 50 hooks with most calls and counts the rest.
    @Test func textSummaryShowsTheTopFifty() throws {
        let victim = try Victim.launch("c_loop", arguments: ["1"])
        defer { victim.kill() }
        let result = try graft(["hook", "-p", String(victim.pid), "libc:str*", "-q", "--duration", "0.5"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let rows = lines.filter { $0.hasPrefix("libc") }
        #expect(rows.count == 50, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("… and ") && $0.contains(" more hook") && $0.hasSuffix("(--json lists every hook)") }, "\(lines)")
        let json = try graft(["hook", "-p", String(victim.pid), "libc:str*", "-q", "--json", "--duration", "0.3"], stateDir: temporaryDirectory())
        let summary = try #require(try jsonLines(json.stdout).last)
        #expect(((summary["hooks"] as? [Any])?.count ?? 0) > 50)
    }
}
