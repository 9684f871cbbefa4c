import Foundation
import Glibc
import Testing
import TestSupport

/// Hook and trace sessions started the way a script starts them: in the background of a shell
/// without job control, which starts them with SIGINT and SIGQUIT ignored. `kill -INT` must still
/// end the session cleanly (every breakpoint removed, summary printed), as it ends perf, bpftrace
/// and strace. graft used to keep the inherited "ignored": the script's `wait` waited for ever
/// and the int3s stayed in the target.
@Suite struct ScriptSignalCLITests {
    /// Runs `graft ARGS > out &` in `bash -c` (no job control), waits for the `armed` event in
    /// `out`, sends `signal` with `kill`, and returns what the script printed: the SigIgn mask the
    /// shell gives its background commands (read from a background `sleep`, whose dispositions stay
    /// as the shell left them — graft's own change as soon as it installs its handlers), and graft's
    /// exit status.
    func runInScriptBackground(_ arguments: [String], signal: String, dir: String) throws -> (sigIgn: UInt64, status: Int32?, out: String, err: String) {
        let quoted = arguments.map { "'\($0)'" }.joined(separator: " ")
        let script = """
            /bin/sleep 30 &
            S=$!
            for i in $(seq 500); do [ "$(cat /proc/$S/comm 2>/dev/null)" = sleep ] && break; sleep 0.01; done
            grep '^SigIgn:' /proc/$S/status
            kill $S
            '\(try graftBinary())' \(quoted) > '\(dir)/out' 2> '\(dir)/err' &
            G=$!
            for i in $(seq 600); do grep -q '"event":"armed"' '\(dir)/out' && break; sleep 0.05; done
            kill -\(signal) $G
            wait $G; echo "status=$?"
            """
        let result = try runCommand("/bin/bash", ["-c", script], timeout: 60)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let mask = lines.first { $0.hasPrefix("SigIgn:") }.flatMap { UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) } ?? 0
        let status = lines.first { $0.hasPrefix("status=") }.flatMap { Int32($0.dropFirst(7)) }
        return (mask, status, readTextFile(dir + "/out") ?? "", readTextFile(dir + "/err") ?? "")
    }

    @Test(arguments: ["INT", "QUIT", "TERM"]) func aBackgroundHookSessionEndsOnKill(signal: String) throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let dir = temporaryDirectory()
        let run = try runInScriptBackground(["hook", "-p", String(victim.pid), "value_a", "--json", "--state-dir", dir], signal: signal, dir: dir)
        // The premise: the shell started graft with SIGINT (bit 1) ignored.
        #expect(run.sigIgn & (1 << (UInt64(SIGINT) - 1)) != 0, "bash did not ignore SIGINT for its background job: the test proves nothing")
        let number: Int32 = ["INT": SIGINT, "QUIT": SIGQUIT, "TERM": SIGTERM][signal]!
        #expect(run.status == 128 + number, "\(run.err)")
        // No --count/--duration and stderr not a terminal: one line says how the session ends.
        #expect(run.err.hasPrefix("graft: armed; the session ends on Ctrl-C or SIGTERM, or when process \(victim.pid) exits\n"), "\(run.err)")
        let summary = try #require(try jsonLines(run.out).last)
        #expect(summary["event"] as? String == "summary" && summary["code_restored"] as? Bool == true, "\(run.out.suffix(300))")
        #expect(summary["ended_by"] as? String == "SIG\(signal)", "\(summary)")
        #expect(victim.isAlive && victim.procStatus("TracerPid") == "0")
        // The dry run reads memory and refuses if any byte differs from the file (an int3 would).
        let check = try graft(["patch", "-p", String(victim.pid), "value_a", "--return", "0", "--dry-run"], stateDir: dir)
        #expect(check.status == 0, "breakpoint left behind: \(check.stderr)")
    }

    @Test func aBackgroundTraceSessionEndsOnSIGINT() throws {
        let victim = try Victim.launch("trace_calls", arguments: ["", "120"], stdin: true)
        defer { victim.kill() }
        let dir = temporaryDirectory()
        // trace_calls waits for a line on stdin before calling trace_a: the trace stays armed.
        let run = try runInScriptBackground(["trace", "-p", String(victim.pid), "--function", "trace_a", "--json", "--state-dir", dir],
                                            signal: "INT", dir: dir)
        #expect(run.sigIgn & (1 << (UInt64(SIGINT) - 1)) != 0)
        #expect(run.status == 130, "\(run.err)")
        let summary = try #require(try jsonLines(run.out).last)
        #expect(summary["event"] as? String == "summary" && summary["code_restored"] as? Bool == true, "\(run.out.suffix(300))")
        #expect(victim.procStatus("TracerPid") == "0")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 10, where: { $0.hasPrefix("traced ") }) != nil, "the victim runs trace_a untouched")
    }
}
