import Foundation
import Glibc
import Testing
import TestSupport

/// Journals any user finds, and a journal that is never a way in (issue 16): default locations for
/// users with and without a home (util-linux `setpriv`), the permission answer before the journal's,
/// root seeing other users' journals, altered records and untrusted directories refused, pruning.
@Suite(.serialized) struct JournalTrustCLITests {
    static let nobody = PermissionCLITests.nobody

    /// graft run as nobody with `environment` only (env -i): no GRAFT_STATE_DIR, no XDG_RUNTIME_DIR.
    func graftAsNobody(_ arguments: [String], home: String) throws -> (status: Int32, stdout: String, stderr: String) {
        let binary = try PermissionCLITests().runnableByOthers(try graftBinary())
        return try runCommand("setpriv", Self.nobody + ["--", "/usr/bin/env", "-i", "HOME=\(home)", "PATH=/usr/bin:/bin", binary] + arguments)
    }

    /// c_loop as nobody (prints a=1 every 100 ms or so).
    func nobodysVictim() throws -> Victim {
        let path = try PermissionCLITests().runnableByOthers(try Victims.path("c_loop"))
        return try Victim.launchCommand("setpriv", arguments: Self.nobody + ["--", path, "20"])
    }

    /// A user without a home (HOME=/nonexistent) patches their own process with no journal
    /// directory set: it works, `list` and `unpatch` find the journal, and root's `list` sees it.
    @Test(arguments: ["/nonexistent", "home"]) func aUserWithOrWithoutHomeFindsTheirJournal(home: String) throws {
        var home = home
        if home == "home" {
            home = temporaryDirectory()
            chmod(home, 0o755)
            chown(home, 65534, 65534)
        }
        let victim = try nobodysVictim()
        defer { victim.kill() }
        let pid = String(victim.pid)
        let patch = try graftAsNobody(["patch", "-p", pid, "value_a", "--return", "5"], home: home)
        #expect(patch.status == 0, "\(patch)")
        #expect(victim.waitForLine("a=5", timeout: 5))
        let list = try graftAsNobody(["list", "-p", pid, "--json"], home: home)
        let statuses = try jsonLines(list.stdout)
        #expect(list.status == 0 && statuses.count == 1 && statuses.first?["state"] as? String == "applied", "\(list)")
        // Root (its own default directory) sees the patch nobody made, with who made it.
        let rootList = try runCommand(try graftBinary(), ["list", "-p", pid, "--json"], environment: ["GRAFT_STATE_DIR": ""])
        let seen = try jsonLines(rootList.stdout)
        #expect(rootList.status == 0, "\(rootList)")
        #expect(seen.contains { $0["recorded_by_uid"] as? Int == 65534 && $0["state"] as? String == "applied" }, "\(rootList)")
        let text = try runCommand(try graftBinary(), ["list", "-p", pid], environment: ["GRAFT_STATE_DIR": ""])
        #expect(text.stdout.contains("patches recorded by uid 65534"), "\(text)")
        let unpatch = try graftAsNobody(["unpatch", "-p", pid, "--all"], home: home)
        #expect(unpatch.status == 0, "\(unpatch)")
        #expect(victim.waitForLine("a=1", timeout: 5))
        if home != "/nonexistent" {
            // Nothing written into a home that is not nobody's own: a home of theirs may hold it.
            #expect(access("/nonexistent", F_OK) != 0)
        }
    }

    /// Against root's process, nobody gets the permission answer, not a journal error (with a
    /// journal directory nobody cannot make, too).
    @Test func thePermissionAnswerComesBeforeTheJournal() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let pid = String(victim.pid)
        let plain = try graftAsNobody(["patch", "-p", pid, "value_a", "--return", "5"], home: "/nonexistent")
        expectOneLineError(plain, "permission denied to trace process \(victim.pid)")
        let unwritable = try graftAsNobody(["patch", "-p", pid, "value_a", "--return", "5", "--state-dir", "/root/graft-journals"], home: "/nonexistent")
        expectOneLineError(unwritable, "permission denied to trace process \(victim.pid)")
        let list = try graftAsNobody(["unpatch", "-p", pid, "--all"], home: "/nonexistent")
        expectOneLineError(list, "permission denied")
        #expect(victim.readLines(2, timeout: 3) == ["a=1", "a=1"])
    }

    /// A record whose original bytes were altered (to int3s) is not written back: unpatch says why,
    /// memory keeps graft's bytes, the target lives on; with the record restored, unpatch works.
    @Test func anAlteredRecordIsRefused() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let pid = String(victim.pid)
        let state = temporaryDirectory()
        let patch = try graft(["patch", "-p", pid, "value_a", "--return", "5", "--json"], stateDir: state)
        #expect(patch.status == 0, "\(patch)")
        #expect(victim.waitForLine("a=5", timeout: 5))
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: state).first { $0.hasSuffix(".json") })
        let path = state + "/" + file
        let saved = try String(contentsOfFile: path, encoding: .utf8)
        let original = try #require(try jsonLines(patch.stdout).first?["original_bytes"] as? String)
        let altered = saved.replacingOccurrences(of: "\"originalBytes\" : \"\(original)\"",
                                                 with: "\"originalBytes\" : \"\(String(repeating: "cc", count: original.count / 2))\"")
        #expect(altered != saved)
        try altered.write(toFile: path, atomically: true, encoding: .utf8)
        let refused = try graft(["unpatch", "-p", pid, "1"], stateDir: state)
        expectOneLineError(refused, "the record was altered; not written back")
        #expect(victim.isAlive)
        #expect(victim.readLines(2, timeout: 3) == ["a=5", "a=5"])
        let list = try graft(["list", "-p", pid, "--json"], stateDir: state)
        #expect(try jsonLines(list.stdout).first?["state"] as? String == "applied", "\(list)")
        try saved.write(toFile: path, atomically: true, encoding: .utf8)
        let unpatch = try graft(["unpatch", "-p", pid, "1"], stateDir: state)
        #expect(unpatch.status == 0, "\(unpatch)")
        #expect(victim.waitForLine("a=1", timeout: 5))
    }

    /// A journal in a directory another user can write, or made by another user, is refused by
    /// every command, and nothing is written.
    @Test func aJournalAnotherUserCouldHaveWrittenIsRefused() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let pid = String(victim.pid)
        let state = temporaryDirectory()
        let patch = try graft(["patch", "-p", pid, "value_a", "--return", "5"], stateDir: state)
        #expect(patch.status == 0, "\(patch)")
        #expect(victim.waitForLine("a=5", timeout: 5))
        chmod(state, 0o777)
        for arguments in [["list", "-p", pid], ["unpatch", "-p", pid, "--all"], ["patch", "-p", pid, "value_b", "--return", "7"]] {
            expectOneLineError(try graft(arguments, stateDir: state), "other users can write it (mode 0777)")
        }
        chmod(state, 0o700)
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: state).first { $0.hasSuffix(".json") })
        chown(state + "/" + file, 65534, 65534)
        expectOneLineError(try graft(["unpatch", "-p", pid, "--all"], stateDir: state), "it was made by uid 65534")
        #expect(victim.readLines(2, timeout: 3) == ["a=5", "a=5"])
        chown(state + "/" + file, 0, 0)
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
        #expect(victim.waitForLine("a=1", timeout: 5))
    }

    /// Journals and locks of processes that are gone are removed by `list --prune` (and by the next
    /// command on any process); a live process's stay.
    @Test func staleJournalsArePruned() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let pid = String(victim.pid)
        let state = temporaryDirectory()
        #expect(try graft(["patch", "-p", pid, "value_a", "--return", "5"], stateDir: state).status == 0)
        // A process that existed and is gone: its pid, reaped.
        let gone = try runCommand("/bin/sh", ["-c", "echo $$"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        for name in ["\(gone)-12345.json", "\(gone)-12345.lock", "\(pid)-1.json", "\(gone)-12345.json.tmp.42"] {
            #expect(FileManager.default.createFile(atPath: state + "/" + name, contents: Data("{}".utf8)))
        }
        let pruned = try graft(["list", "--prune"], stateDir: state)
        #expect(pruned.status == 0, "\(pruned)")
        #expect(pruned.stdout.split(separator: "\n").count == 4, "\(pruned)")
        let left = try FileManager.default.contentsOfDirectory(atPath: state).sorted()
        #expect(left.allSatisfy { $0.hasPrefix("\(pid)-") && !$0.hasPrefix("\(pid)-1.") }, "\(left)")
        #expect(left.contains { $0.hasSuffix(".json") })
        // And by the next command without being asked.
        #expect(FileManager.default.createFile(atPath: state + "/\(gone)-7.lock", contents: nil))
        #expect(try graft(["list", "-p", pid], stateDir: state).status == 0)
        #expect(access(state + "/\(gone)-7.lock", F_OK) != 0)
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
    }
}
