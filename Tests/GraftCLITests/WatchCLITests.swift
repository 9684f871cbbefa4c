import Foundation
import Glibc
import Testing
import TestSupport

/// `graft watch` and `graft hook --hardware` end to end: text and JSON, usage errors.
@Suite struct WatchCLITests {
    @Test func textLinesNameTheWriterAndTheSummaryCounts() throws {
        let victim = try Victim.launch("watch_target", arguments: ["100000000", "2", "spawn", "30"], stdin: true)
        defer { victim.kill() }
        victim.writeStdin("go\n")
        let result = try graft(["watch", "-p", String(victim.pid), "counter", "--count", "4", "--backtrace"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("watching watch_target!counter (8 bytes at 0x") == true, "\(lines)")
        #expect(lines.first?.hasSuffix("write of 8 bytes (debug register DR0)") == true, "\(lines)")
        #expect(lines.filter { $0.contains("] counter ") && $0.contains(" by watch_target!bump+0x") && $0.contains("(lock xadd") }.count == 4, "\(lines)")
        #expect(lines.filter { $0.contains("watch_target!writer_thread+0x") }.count == 4, "\(lines)")
        #expect(lines.last?.hasPrefix("4 writes of watch_target!counter") == true && lines.last?.hasSuffix("debug registers cleared") == true, "\(lines)")
        // The writers go on after the session (a register left armed would kill them with SIGTRAP).
        usleep(200_000)
        #expect(victim.isAlive)
    }

    @Test func jsonEventsCarryTheDocumentedKeys() throws {
        let victim = try Victim.launch("watch_target", arguments: ["100000000", "1", "spawn", "30"], stdin: true)
        defer { victim.kill() }
        victim.writeStdin("go\n")
        let result = try graft(["watch", "-p", String(victim.pid), "counter", "--count", "2", "--json"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let events = try jsonLines(result.stdout)
        #expect(events.compactMap { $0["event"] as? String } == ["armed", "watch", "watch", "summary"])
        let hit = try #require(events.first { $0["event"] as? String == "watch" })
        for key in ["watch", "tid", "address", "length", "old", "new", "old_value", "new_value", "changed", "pc",
                    "instruction_address", "instruction", "function", "time_ns"] {
            #expect(hit[key] != nil, "missing \(key)")
        }
        let old = try #require(hit["old_value"] as? Int), new = try #require(hit["new_value"] as? Int)
        #expect(new > old)
        #expect(events.last?["writes"] as? Int == 2 && events.last?["debug_registers_cleared"] as? Bool == true)
    }

    /// --rw counts accesses: the summary's key is `accesses` (docs/cli.md), and so is its text.
    @Test func rwSummaryCountsAccesses() throws {
        let victim = try Victim.launch("watch_target", arguments: ["100000000", "1", "spawn", "30"], stdin: true)
        defer { victim.kill() }
        victim.writeStdin("go\n")
        let json = try graft(["watch", "-p", String(victim.pid), "counter", "--rw", "--count", "2", "--json"], stateDir: temporaryDirectory())
        #expect(json.status == 0, "\(json.stderr)")
        #expect(try jsonLines(json.stdout).last?["accesses"] as? Int == 2, "\(json.stdout)")
        let text = try graft(["watch", "-p", String(victim.pid), "counter", "--rw", "--count", "2", "--quiet"], stateDir: temporaryDirectory())
        #expect(text.stdout.contains("2 accesses of watch_target!counter"), "\(text.stdout)")
    }

    @Test func usageErrors() throws {
        let victim = try Victim.launch("watch_target", arguments: ["5", "1"], stdin: true)
        defer { victim.kill() }
        let pid = String(victim.pid)
        let badLength = try graft(["watch", "-p", pid, "counter", "--len", "3"], stateDir: temporaryDirectory())
        #expect(badLength.status != 0 && badLength.stderr.contains("--len takes 1, 2, 4 or 8"), "\(badLength.stderr)")
        let both = try graft(["watch", "-p", pid, "counter", "--write", "--rw"], stateDir: temporaryDirectory())
        #expect(both.status != 0 && both.stderr.contains("--write or --rw"), "\(both.stderr)")
        let misaligned = try graft(["watch", "-p", pid, "counter+2", "--len", "8"], stateDir: temporaryDirectory())
        #expect(misaligned.status != 0 && misaligned.stderr.hasPrefix("graft: error: counter+2 (0x") && misaligned.stderr.contains("use --len 2"), "\(misaligned.stderr)")
        #expect(misaligned.stderr.split(separator: "\n").count == 1)
    }

    @Test func hardwareHookChangesNoByte() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let result = try graft(["hook", "-p", String(victim.pid), "value_a", "--hardware", "--count", "3", "--returns"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("hooked c_loop!value_a at 0x") == true && lines.first?.hasSuffix(": debug register DR0)") == true, "\(lines)")
        // typed: int value_a(void); a call and its return on one line, or two when a return came late
        #expect(lines.filter { $0.contains("] value_a(…) = 1 in ") || $0.contains("] value_a returned 1 in ") }.count >= 2, "\(lines)")
        let five = try graft(["hook", "-p", String(victim.pid), "value_a", "value_b", "value_c", "add", "main", "--hardware"], stateDir: temporaryDirectory())
        #expect(five.status != 0 && five.stderr.contains("main cannot have one"), "\(five.stderr)")
        #expect(victim.isAlive)
    }
}
