import Foundation
import Glibc
import Testing
import TestSupport

/// `graft hook` end to end: its text and JSON output, its exit paths, launch mode, its errors.
@Suite struct HookCLITests {
    @Test func textLinesAndSummary() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let result = try graft(["hook", "-p", String(victim.pid), "value_a", "--count", "3", "--returns", "--args", "1"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("hooked c_loop!value_a at 0x") == true, "\(lines)")
        // value_a is `int value_a(void)` in c_loop's DWARF: no arguments, an int result.
        #expect(lines.filter { $0.contains("] value_a()") }.count == 3, "\(lines)")
        // A call and its return on one line (`value_a() = 1 in …`), or on two when a return came late.
        #expect(lines.filter { $0.contains("] value_a() = 1 in ") || $0.contains("] value_a returned 1 in ") }.count >= 2, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("value_a") && $0.contains("c_loop!value_a") && $0.contains(" 3 ") }, "\(lines)")
        #expect(lines.last?.contains("ended by --count") == true)
        #expect(victim.isAlive)
    }

    /// Several processes: each line says whose call it was, and a call and its return still make
    /// one line (one waiting line over every process keeps them in order).
    @Test func callsAndReturnsOfSeveralProcesses() throws {
        let first = try Victim.launch("c_loop", arguments: ["5"])
        defer { first.kill() }
        // Another period: two loops of the same period started together call at the same instants,
        // and each call's line then rightly prints before the other's return.
        let second = try Victim.launch("c_loop", arguments: ["7"])
        defer { second.kill() }
        let result = try graft(["hook", "-p", "\(first.pid),\(second.pid)", "value_a", "--count", "8", "--returns"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        // Each session attaches and arms on its own: under load one may catch few of the 8 calls.
        for pid in [first.pid, second.pid] {
            #expect(lines.contains { $0.hasPrefix("process \(pid): hooked c_loop!value_a at 0x") }, "\(lines)")
        }
        let combined = lines.filter { line in [first.pid, second.pid].contains { line.contains("[\($0)/\($0)] value_a(…) = 1 in ") } }.count
        #expect(combined >= 1, "\(lines)")
        // --count 8 over both: 8 calls reported, and no return of a call past the count.
        let calls = lines.filter { $0.contains("] value_a(…)") }.count
        let returns = lines.filter { $0.contains("] value_a(…) = ") || $0.contains("] value_a returned ") }.count
        #expect(calls == 8 && returns <= calls, "\(lines)")
        #expect(first.isAlive && second.isAlive)
    }

    /// `--count` over several processes with `--quiet` (no per-call events to count): the sessions'
    /// own counts end it, each summary saying so.
    @Test func quietCountOverSeveralProcesses() throws {
        let first = try Victim.launch("c_loop", arguments: ["2"])
        defer { first.kill() }
        let second = try Victim.launch("c_loop", arguments: ["3"])
        defer { second.kill() }
        let result = try graft(["hook", "-p", "\(first.pid),\(second.pid)", "value_a", "--count", "50", "--json", "--quiet"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let summaries = try jsonLines(result.stdout).filter { $0["event"] as? String == "summary" }
        #expect(summaries.count == 2 && summaries.allSatisfy { $0["ended_by"] as? String == "--count" }, "\(result.stdout)")
        #expect(summaries.reduce(0) { $0 + ($1["total_hits"] as? Int ?? 0) } >= 50, "\(result.stdout)")
        #expect(first.isAlive && second.isAlive)
    }

    @Test func jsonEventsCarryTheDocumentedKeys() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let result = try graft(["hook", "-p", String(victim.pid), "value_a", "--count", "2", "--returns", "--backtrace", "--json"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let events = try jsonLines(result.stdout)
        let kinds = events.compactMap { $0["event"] as? String }
        #expect(kinds.first == "armed" && kinds.last == "summary", "\(kinds)")
        let hit = try #require(events.first { $0["event"] as? String == "hit" })
        #expect(hit["hook"] as? String == "value_a")
        #expect(hit["tid"] as? Int == Int(victim.pid))
        #expect((hit["address"] as? String)?.hasPrefix("0x") == true)
        #expect(hit["args"] is [Any])
        let frames = try #require(hit["backtrace"] as? [[String: Any]])
        #expect(frames.first?["function"] as? String == "value_a")
        #expect(frames.contains { $0["function"] as? String == "main" })
        #expect((frames.first?["pc"] as? String)?.hasPrefix("0x") == true && frames.first?["module"] as? String == "c_loop")
        // libc's __libc_start_call_main has no symbol in Debian's stripped libc: `libc.so.6+0xOFF`,
        // as text lines spell it, never null inside a file.
        #expect(frames.contains { ($0["function"] as? String)?.hasPrefix("libc.so.6+0x") == true && $0["module"] as? String == "libc.so.6" }, "\(frames)")
        #expect(!frames.contains { $0["module"] is String && $0["function"] is NSNull }, "\(frames)")
        let ret = try #require(events.first { $0["event"] as? String == "return" })
        #expect(ret["value"] as? String == "0x1" && ret["duration_ns"] is Int && ret["hook"] as? String == "value_a")
        let summary = try #require(events.last)
        let hooks = try #require(summary["hooks"] as? [[String: Any]])
        #expect(hooks.first?["hook"] as? String == "value_a" && hooks.first?["hits"] as? Int == 2)
    }

    /// SIGTSTP first: held (a suspended graft would leave threads stopped at its breakpoints), with
    /// a notice; the session goes on. Then the termination signal ends it cleanly (SIGQUIT too:
    /// its default action used to kill graft and leave the int3s).
    @Test(arguments: [SIGTERM, SIGHUP, SIGQUIT]) func terminationSignalMidSessionRemovesTheBreakpoints(signal: Int32) throws {
        let victim = try Victim.launch("c_loop", arguments: ["2"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "-p", String(victim.pid), "value_a", "value_b", "--returns", "--state-dir", state],
                                               waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 20, where: { $0.contains("] value_a(") }) != nil)
        session.signal(SIGTSTP)
        #expect(session.waitForLine(timeout: 5, where: { $0.contains("] value_a(") }) != nil, "the session goes on after Ctrl-Z")
        #expect(session.procStatus("State")?.hasPrefix("T") == false)
        session.signal(signal)
        #expect(session.waitExit(timeout: 20).flatMap(WaitStatus.exitCode) == 128 + signal)
        #expect(session.stderrOutput.contains("graft: SIGTSTP held: a suspended graft would leave every thread that reaches a breakpoint stopped"), "\(session.stderrOutput)")
        let name = [SIGTERM: "SIGTERM", SIGHUP: "SIGHUP", SIGQUIT: "SIGQUIT"][signal]!
        #expect(session.waitForLine(timeout: 5, where: { $0.contains("ended by \(name)") && $0.contains("code verified") }) != nil,
                "\(session.transcript.suffix(3))")
        // A dry-run patch reads memory and refuses if any byte differs from the file (an int3 would).
        for function in ["value_a", "value_b"] {
            let check = try graft(["patch", "-p", String(victim.pid), function, "--return", "0", "--dry-run"], stateDir: state)
            #expect(check.status == 0, "\(function): \(check.stderr)")
        }
        _ = victim.drain()
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
    }

    /// `graft patch` on a function a hook session holds: the int3 is named with the session that
    /// set it (it said "a debugger breakpoint seems to be set here").
    @Test func patchingAHookedFunctionNamesTheSession() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "-p", String(victim.pid), "value_a", "--state-dir", state],
                                               waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 20, where: { $0.hasPrefix("hooked ") }) != nil)
        let refused = try graft(["patch", "-p", String(victim.pid), "value_a", "--return", "1"], stateDir: state)
        expectOneLineError(refused, "a breakpoint (int3) is set here, and process \(victim.pid) is traced by \(session.pid) (graft): end that session first")
        session.signal(SIGINT)
        #expect(session.waitExit(timeout: 20).flatMap(WaitStatus.exitCode) == 130)
    }

    /// `graft hook … | head -2`: when the reader goes, the session ends (as by SIGPIPE) with its
    /// breakpoints removed. SIGPIPE's default action used to kill graft mid-session, leaving int3s
    /// that killed the target at its next call.
    @Test func aClosedOutputPipeEndsTheSessionCleanly() throws {
        let victim = try Victim.launch("c_loop", arguments: ["50"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pipeline = "'\(try graftBinary())' hook -p \(victim.pid) value_a --state-dir '\(state)' 2>'\(state)/err' | head -n 2; echo \"graft=${PIPESTATUS:-$?}\""
        let result = try runCommand("/bin/bash", ["-c", "set -o pipefail; " + pipeline], timeout: 30)
        #expect(result.stdout.split(separator: "\n").filter { $0.contains("value_a(") }.count >= 1, "\(result.stdout)")
        let err = readTextFile(state + "/err") ?? ""
        #expect(err.contains("ended by SIGPIPE") || result.stdout.contains("graft=141"), "\(err) \(result.stdout)")
        #expect(victim.isAlive)
        let check = try graft(["patch", "-p", String(victim.pid), "value_a", "--return", "0", "--dry-run"], stateDir: state)
        #expect(check.status == 0, "breakpoint left behind: \(check.stderr)")
        #expect(victim.procStatus("TracerPid") == "0")
    }

    @Test func launchModeHooksBeforeMainAndExitsWithTheChildsStatus() throws {
        let result = try runCommand(try graftBinary(), ["hook", "hook_f", "--json", "-q", "--state-dir", temporaryDirectory(), "--",
                                                        try Victims.path("hook_count"), "50", "1"], input: "go\n")
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("calls 50 sum \(4 * 50 * 51)"), "\(lines)")
        let summary = try #require(lines.last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        #expect((summary["hooks"] as? [[String: Any]])?.first?["hits"] as? Int == 50)
        #expect((summary["ended_by"] as? String)?.hasPrefix("target exit") == true)

        let shell = try runCommand(try graftBinary(), ["hook", "libc:getppid", "-q", "--state-dir", temporaryDirectory(), "--",
                                                       "/bin/sh", "-c", "exit 7"])
        #expect(shell.status == 7, "\(shell.stderr)")
        let missing = try runCommand(try graftBinary(), ["hook", "main", "--", "/no/such/program"])
        expectOneLineError(missing, "cannot run /no/such/program")
    }

    /// `--quiet` builds no events (HookSession.reportsCalls = false) but counts exactly: 8 threads,
    /// 20000 calls, with and without `--returns` (whose durations the summary still measures).
    @Test func quietCountsEveryCallWithoutReportingThem() throws {
        for extra in [[], ["--returns"]] {
            let result = try runCommand(try graftBinary(), ["hook", "hook_f", "--json", "--quiet"] + extra + ["--state-dir", temporaryDirectory(), "--",
                                                            try Victims.path("hook_count"), "20000", "8"], input: "go\n")
            #expect(result.status == 0, "\(result.stderr)")
            let lines = result.stdout.split(separator: "\n").map(String.init)
            #expect(lines.contains("calls 20000 sum \(4 * 20000 * 20001)"), "\(lines.suffix(3))")
            // hook_f starts with push rbp, run from its copy: without --returns every hit takes the
            // counting fast path (pc only), with --returns the full one.
            #expect(lines.first?.contains("\"strategy\":\"out of line\"") == true, "\(lines.first ?? "")")
            #expect(!lines.contains { $0.contains("\"event\":\"hit\"") || $0.contains("\"event\":\"return\"") }, "\(extra)")
            let summary = try #require(lines.last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
            let hook = try #require((summary["hooks"] as? [[String: Any]])?.first)
            #expect(hook["hits"] as? Int == 20000, "\(extra): \(hook)")
            if !extra.isEmpty {
                #expect(hook["returns"] as? Int == 20000, "\(hook)")
                #expect(hook["p50_ns"] is Int && hook["p99_ns"] is Int, "\(hook)")
            }
        }
    }

    /// On a terminal (util-linux `script` gives graft a pty) `--quiet` still shows the live count,
    /// read from the session's counter since no hit events are built, and how the session ends.
    @Test func quietStatusLineCountsOnATerminal() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let command = "\(try graftBinary()) hook -p \(victim.pid) value_a --quiet --duration 1.5 --state-dir \(temporaryDirectory())"
        let result = try runCommand("script", ["-qfec", command, "/dev/null"])
        #expect(result.status == 0, "\(result)")
        let counts = result.stdout.split(whereSeparator: { $0 == "\r" || $0 == "\n" }).compactMap { line -> Int? in
            guard let range = line.range(of: "graft: "),
                  line.hasSuffix(" so far; ends after 1.5 s, on Ctrl-C or SIGTERM, or when process \(victim.pid) exits") else { return nil }
            return Int(line[range.upperBound...].prefix(while: \.isNumber))
        }
        #expect(counts.contains { $0 > 0 }, "\(result.stdout.suffix(300))")
        #expect(counts == counts.sorted(), "the count went down: \(counts)")
    }

    @Test func errorsAreOneLine() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let pid = String(victim.pid)
        let state = temporaryDirectory()
        expectOneLineError(try graft(["hook", "-p", pid], stateDir: state), "LOCATION")
        expectOneLineError(try graft(["hook", "-p", pid, "value_a", "--skip"], stateDir: state), "--set-return")
        expectOneLineError(try graft(["hook", "-p", pid, "value_aa"], stateDir: state), "did you mean value_a")
        expectOneLineError(try graft(["hook", "-p", pid, "value_a+2"], stateDir: state), "not an instruction boundary")
        expectOneLineError(try runCommand(try graftBinary(), ["hook", "value_a", "--state-dir", state, "--"]), "command")
        expectOneLineError(try graft(["hook", "-p", "999999999", "value_a"], stateDir: state), "no process with PID 999999999")
        #expect(victim.isAlive)
    }
}

/// Launch mode's endings: the summary comes when the hooks end (the command may run on), and a
/// SIGINT sent to graft alone reaches the command.
@Suite struct HookLaunchEndingTests {
    @Test func summaryComesWhenTheHooksEndNotWhenTheCommandExits() throws {
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "value_a", "--count", "2", "--state-dir", temporaryDirectory(), "--",
                                                                            try Victims.path("c_loop"), "50", "30"], waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 15, where: { $0.contains("ended by --count") }) != nil, "\(session.transcript.suffix(5))")
        #expect(session.isAlive, "graft waits for its command")
        #expect(session.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil, "the command runs on unhooked")
    }

    @Test func sigintToGraftAloneReachesTheCommand() throws {
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "value_a", "--state-dir", temporaryDirectory(), "--",
                                                                            try Victims.path("c_loop"), "50", "30"], waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 15, where: { $0.contains("] value_a(") }) != nil)
        session.signal(SIGINT)
        #expect(session.waitExit(timeout: 10).flatMap(WaitStatus.exitCode) == 128 + SIGINT)
    }
}

/// Ctrl-C twice (an impatient user): the second one must not cut the teardown short.
@Suite struct DoubleInterruptTests {
    @Test(arguments: ["hook", "trace"])
    func aSecondSigintStillLeavesTheCodeIntact(command: String) throws {
        let victim = try Victim.launch("c_loop", arguments: ["1"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let arguments = command == "hook" ? ["hook", "-p", String(victim.pid), "value_a", "value_b", "--returns"]
                                          : ["trace", "-p", String(victim.pid), "--json"]
        let session = try Victim.launchCommand(try graftBinary(), arguments: arguments + ["--state-dir", state], waitForReady: false)
        defer { session.kill() }
        let marker = command == "hook" ? "] value_a(" : "\"event\":\"step\""
        #expect(session.waitForLine(timeout: 20, where: { $0.contains(marker) }) != nil)
        session.signal(SIGINT)
        // Not a synchronisation: the second Ctrl-C comes a moment after the first, as a user's would.
        usleep(2_000)
        session.signal(SIGINT)
        #expect(session.waitExit(timeout: 20).flatMap(WaitStatus.exitCode) == 128 + SIGINT)
        try waitUntil("the victim to be detached (TracerPid \(victim.procStatus("TracerPid") ?? "gone"))") {
            victim.procStatus("TracerPid") == "0" || !victim.isAlive
        }
        #expect(victim.isAlive && victim.procStatus("TracerPid") == "0")
        // A dry-run patch refuses if any byte differs from the file (an int3 would).
        for function in ["value_a", "value_b"] {
            let check = try graft(["patch", "-p", String(victim.pid), function, "--return", "0", "--dry-run"], stateDir: state)
            #expect(check.status == 0, "\(function): \(check.stderr)")
        }
        _ = victim.drain()
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
    }
}
