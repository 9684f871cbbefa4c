import Foundation
import Glibc
import Testing
import TestSupport

/// `graft trace` end to end: per-step text and JSON, the summary, folded stacks and the SVG, its
/// exit paths, launch mode and its errors.
@Suite struct TraceCLITests {
    func busyWorker() throws -> (Victim, String) {
        let victim = try Victim.launch("trace_busy", arguments: ["1", "120"])
        let line = try #require(victim.waitForLine(timeout: 10, where: { $0.hasPrefix("tids ") }))
        return (victim, String(line.split(separator: " ")[1]))
    }

    @Test func perStepTextWithDisassembly() throws {
        let (victim, tid) = try busyWorker()
        defer { victim.kill() }
        let result = try graft(["trace", "-p", String(victim.pid), "--tid", tid, "--steps", "20", "--disasm"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 21, "\(lines)")
        // `0x…  module!function+0xoff   text`
        for line in lines.prefix(20) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            #expect(fields.count >= 3 && fields[0].hasPrefix("0x") && fields[1].hasPrefix("trace_busy!"), "\(line)")
        }
        #expect(lines.last?.hasPrefix("20 instructions of thread \(tid)") == true && lines.last?.contains("ended by --steps") == true,
                "\(lines.last ?? "")")
        #expect(victim.isAlive && victim.procStatus("TracerPid") == "0")
    }

    @Test func jsonStepsAndSummaryCarryTheDocumentedKeys() throws {
        let victim = try Victim.launch("trace_calls", arguments: ["", "120"], stdin: true)
        defer { victim.kill() }
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["trace", "-p", String(victim.pid), "--function", "trace_a", "--disasm",
                                                                            "--json", "--state-dir", temporaryDirectory()],
                                               waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 20, where: { $0.contains("\"event\":\"armed\"") }) != nil)
        victim.writeStdin("go\n")
        #expect(session.waitExit(timeout: 30).flatMap(WaitStatus.exitCode) == 0)
        let events = try jsonLines(session.drain().joined(separator: "\n"))
        let steps = events.filter { $0["event"] as? String == "step" }
        #expect(steps.count == 113)
        let first = try #require(steps.first)
        #expect(first["tid"] as? Int == Int(victim.pid) && (first["pc"] as? String)?.hasPrefix("0x") == true)
        #expect(first["module"] as? String == "trace_calls" && first["function"] as? String == "trace_a" && first["offset"] as? Int == 0)
        #expect(first["text"] as? String == "push rbp")
        #expect(steps.contains { $0["text"] as? String == "syscall" && $0["function"] as? String == "trace_sys" })
        let summary = try #require(events.last)
        #expect(summary["event"] as? String == "summary" && summary["steps"] as? Int == 113 && summary["code_restored"] as? Bool == true)
        let functions = try #require(summary["functions"] as? [[String: Any]])
        let a = try #require(functions.first { $0["function"] as? String == "trace_a" })
        #expect(a["module"] as? String == "trace_calls" && a["calls"] as? Int == 1 && a["self"] as? Int == 53 && a["total"] as? Int == 113)
        #expect(events.contains { $0["event"] as? String == "call_end" && $0["instructions"] as? Int == 113 })
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 1 83" }) != nil)
    }

    /// `--signals skip`: SIGUSR1 handlers run free, each traced call counts its 113 instructions, the
    /// JSON summary and the text summary say how many handler runs were skipped.
    @Test func signalsSkipIsCountedInTheSummary() throws {
        let victim = try Victim.launch("trace_calls", arguments: ["signals", "120"], stdin: true)
        defer { victim.kill() }
        for json in [true, false] {
            let session = try Victim.launchCommand(try graftBinary(), arguments: ["trace", "-p", String(victim.pid), "--function", "trace_a", "--summary", "--calls", "5",
                                                                                "--signals", "skip", "--state-dir", temporaryDirectory()] + (json ? ["--json"] : []),
                                                   waitForReady: false)
            defer { session.kill() }
            if json {
                #expect(session.waitForLine(timeout: 60, where: { $0.contains("\"event\":\"armed\"") }) != nil)
            } else {
                try waitUntil("graft to arm trace_a (stderr: \(session.stderrOutput))", timeout: 60) {
                    session.stderrOutput.contains("graft: waiting for a call of trace_calls!trace_a") || !session.isAlive
                }
            }
            // Five calls (565 instructions, ~20 ms stepped): SIGUSR1 comes every 200 µs.
            victim.writeStdin("go\ngo\ngo\ngo\ngo\n")
            #expect(session.waitExit(timeout: 30).flatMap(WaitStatus.exitCode) == 0)
            let text = session.drain().joined(separator: "\n")
            if json {
                let summary = try #require(try jsonLines(text).last)
                #expect(summary["steps"] as? Int == 565 && (summary["handlers_skipped"] as? Int ?? 0) > 0, "\(summary)")
                #expect(summary["handlers_skipped"] as? Int == summary["signals_delivered"] as? Int)
            } else {
                #expect(text.contains("signal handlers run free, not stepped: ") && text.contains(" SIGUSR1 (--signals step traces them)"), "\(text)")
                #expect(text.contains("565 instructions of thread"), "\(text)")
            }
        }
        let bad = try graft(["trace", "-p", String(victim.pid), "--function", "trace_a", "--signals", "never"], stateDir: temporaryDirectory())
        #expect(bad.status != 0 && bad.stderr.contains("--signals"), "\(bad.stderr)")
    }

    /// A stripped program has no `main` symbol: the error says the program is stripped and how to
    /// name its code, and suggests nothing absurd (`main` is not a word of `textdomain`).
    @Test func strippedProgramSaysSo() throws {
        for command in [["trace", "--function", "main"], ["hook", "main"]] {
            let result = try runCommand(try graftBinary(), command + ["--state-dir", temporaryDirectory(), "--", "/bin/true"])
            expectOneLineError(result, "no function 'main': true is stripped (no .symtab: only its exported functions have names); name its code as true+0xOFF")
            #expect(!result.stderr.contains("textdomain") && !result.stderr.contains("getdomainname"), "\(result.stderr)")
        }
    }

    @Test func foldedStacksAndAWellFormedFlameGraph() throws {
        let victim = try Victim.launch("trace_calls", arguments: ["", "120"], stdin: true)
        defer { victim.kill() }
        let dir = temporaryDirectory()
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["trace", "-p", String(victim.pid), "--function", "trace_a", "--calls", "2",
                                                                            "--folded", "\(dir)/t.folded", "--svg", "\(dir)/t.svg", "--state-dir", dir],
                                               waitForReady: false)
        defer { session.kill() }
        // Text mode says nothing on stdout before the end: wait for its armed line on stderr.
        try waitUntil("graft to arm trace_a (stderr: \(session.stderrOutput))", timeout: 60) {
            session.stderrOutput.contains("graft: waiting for a call of trace_calls!trace_a") || !session.isAlive
        }
        victim.writeStdin("go\ngo\n")
        #expect(session.waitExit(timeout: 30).flatMap(WaitStatus.exitCode) == 0)
        let text = session.drain().joined(separator: "\n")
        #expect(text.contains("trace_calls!trace_a") && text.contains("wrote \(dir)/t.svg"), "\(text)")
        let folded = try #require(readTextFile("\(dir)/t.folded"))
        #expect(folded == "trace_a 106\ntrace_a;trace_b 66\ntrace_a;trace_b;trace_leaf 36\ntrace_a;trace_sys 18\n")
        let check = try runCommand("/usr/bin/python3", ["-c", """
            import sys, xml.dom.minidom
            doc = xml.dom.minidom.parse(sys.argv[1])
            titles = [t.firstChild.data for t in doc.getElementsByTagName('title') if t.firstChild]
            print('\\n'.join(titles))
            """, "\(dir)/t.svg"])
        #expect(check.status == 0, "the SVG is not well-formed XML: \(check.stderr)")
        for name in ["trace_a", "trace_b", "trace_leaf", "trace_sys"] {
            #expect(check.stdout.contains("\(name) ("), "\(name) missing from the SVG's frames")
        }
    }

    @Test func sigtermMidTraceLeavesTheTargetRunning() throws {
        let (victim, tid) = try busyWorker()
        defer { victim.kill() }
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["trace", "-p", String(victim.pid), "--tid", tid, "--json",
                                                                            "--state-dir", temporaryDirectory()], waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 20, where: { $0.contains("\"event\":\"step\"") }) != nil)
        // Mid-trace: a hundred more steps went by.
        #expect(session.readLines(100, timeout: 20).count == 100)
        session.signal(SIGTERM)
        #expect(session.waitExit(timeout: 20).flatMap(WaitStatus.exitCode) == 128 + SIGTERM)
        let last = session.drain().last ?? ""
        #expect(last.contains("\"ended_by\":\"SIGTERM\"") && last.contains("\"code_restored\":true"), "\(last.prefix(300))")
        try waitUntil("the victim to be detached") { victim.procStatus("TracerPid") == "0" || !victim.isAlive }
        #expect(victim.isAlive && victim.procStatus("TracerPid") == "0")
    }

    @Test func launchModeTracesMainOrAFunctionAndExitsWithTheChildsStatus() throws {
        let result = try runCommand(try graftBinary(), ["trace", "--function", "trace_a", "--summary", "--state-dir", temporaryDirectory(), "--",
                                                        try Victims.path("trace_calls")], input: "go\n")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("traced 1 83"))
        #expect(result.stdout.split(separator: "\n").contains { $0.hasPrefix("trace_calls!trace_a") && $0.split(separator: " ").suffix(3) == ["1", "53", "113"] },
                "\(result.stdout)")
        let main = try runCommand(try graftBinary(), ["trace", "--summary", "--json", "--state-dir", temporaryDirectory(), "--",
                                                      try Victims.path("trace_calls")], input: "go\n")
        #expect(main.status == 0, "\(main.stderr)")
        let summary = try #require(try jsonLines(main.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.joined(separator: "\n")).last)
        let functions = try #require(summary["functions"] as? [[String: Any]])
        #expect(functions.contains { $0["function"] as? String == "main" && $0["calls"] as? Int == 1 })
        #expect(functions.contains { $0["function"] as? String == "trace_a" && $0["total"] as? Int == 113 })
    }

    @Test func errorsAreOneLine() throws {
        let victim = try Victim.launch("trace_calls", arguments: ["", "120"], stdin: true)
        defer { victim.kill() }
        let pid = String(victim.pid)
        let state = temporaryDirectory()
        expectOneLineError(try graft(["trace", "-p", pid, "--calls", "2"], stateDir: state), "--calls needs --function")
        expectOneLineError(try graft(["trace", "-p", pid, "--tid", "1"], stateDir: state), "thread 1 is not a thread of process \(pid)")
        expectOneLineError(try graft(["trace", "-p", pid, "--function", "trace_aa"], stateDir: state), "did you mean trace_a")
        expectOneLineError(try graft(["trace", "-p", pid, "--steps", "0"], stateDir: state), "--steps")
        expectOneLineError(try graft(["trace", "-p", pid, "--steps", "5", "--svg", "/no/such/dir/x.svg"], stateDir: state), "cannot write /no/such/dir/x.svg")
        expectOneLineError(try graft(["trace", "-p", "999999999"], stateDir: state), "no process with PID 999999999")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 10, where: { $0 == "traced 1 83" }) != nil)
    }
}

@Suite struct TraceLaunchFallbackTests {
    /// A program without a `main` symbol (stripped /bin/sleep) is stepped from its entry point.
    @Test func launchModeWithoutMainStepsFromTheEntryPoint() throws {
        let result = try runCommand(try graftBinary(), ["trace", "--steps", "50", "--summary", "--json", "--state-dir", temporaryDirectory(), "--",
                                                        "/bin/sleep", "0.1"])
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try #require(try jsonLines(result.stdout).last)
        #expect(summary["steps"] as? Int == 50 && summary["ended_by"] as? String == "--steps")
        // A failed trace leaves no empty output file behind.
        let file = temporaryDirectory() + "/never.svg"
        expectOneLineError(try runCommand(try graftBinary(), ["trace", "-p", "999999999", "--svg", file]), "no process with PID")
        #expect(access(file, F_OK) != 0)
    }
}
