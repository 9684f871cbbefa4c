import Foundation
import Glibc
import Testing
import TestSupport

/// The per-process journal lock: two graft commands on one process never interleave, and a command
/// that cannot get the lock says who holds it.
@Suite struct JournalLockCLITests {
    /// The journal lock file of `pid` under `state` (PID-STARTTIME.lock).
    func lockPath(_ pid: Int32, state: String) throws -> String {
        let stat = try #require(readTextFile("/proc/\(pid)/stat"))
        let fields = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...].split(separator: " ")
        return "\(state)/\(pid)-\(fields[19]).lock"
    }

    @Test func concurrentPatchesAndUnpatchesNeverStack() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        for round in 0..<3 {
            // Four commands at once on one function: exactly one applies, the others are told it is
            // already patched (never a second jump over the first).
            let results = try runConcurrently(4) { i in
                try graft(["patch", "-p", pid, "value_a", "--return", String(10 + round * 10 + i), "--json"], stateDir: state)
            }
            let applied = results.filter { $0.status == 0 }
            #expect(applied.count == 1, "round \(round): \(results)")
            for refused in results where refused.status != 0 {
                expectOneLineError(refused, "is already patched")
            }
            let list = try jsonLines(try graft(["list", "-p", pid, "--json"], stateDir: state).stdout).filter { $0["state"] as? String == "applied" }
            #expect(list.count == 1, "round \(round): \(list)")
            // Four unpatch --all at once: one reverts, the rest find nothing left to do.
            let reverts = try runConcurrently(4) { _ in try graft(["unpatch", "-p", pid, "--all", "--json"], stateDir: state) }
            #expect(reverts.allSatisfy { $0.status == 0 }, "\(reverts)")
            #expect(reverts.filter { $0.stdout.contains("\"outcome\":\"reverted\"") }.count == 1, "\(reverts)")
            #expect(victim.waitForLine("a=1", timeout: 5))
        }
        let bytes = try graft(["list", "-p", pid, "--json"], stateDir: state)
        #expect(!bytes.stdout.contains("\"state\":\"applied\""), "\(bytes.stdout)")
    }

    @Test func aHeldLockIsWaitedForAndItsHolderNamed() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let lock = try lockPath(victim.pid, state: state)
        // Someone else (util-linux flock, standing in for another graft) holds the lock for 1 s:
        // graft waits, then applies.
        let marker = state + "/released"
        let holder = try Victim.launchCommand("flock", arguments: [lock, "sh", "-c", "echo ready; sleep 1; echo > \(marker)"])
        defer { holder.kill() }
        let waited = try graft(["patch", "-p", String(victim.pid), "value_a", "--return", "9"], stateDir: state)
        #expect(access(marker, F_OK) == 0, "graft finished while the lock was still held")
        #expect(waited.status == 0, "\(waited)")
        #expect(victim.waitForLine("a=9", timeout: 5))
        _ = try graft(["unpatch", "-p", String(victim.pid), "--all"], stateDir: state)
        // Held for longer than graft waits (GRAFT_LOCK_TIMEOUT, 10 s by default): refused, naming
        // the holder, and nothing written.
        let long = try Victim.launchCommand("flock", arguments: [lock, "sh", "-c", "echo ready; exec sleep 30"])
        defer { long.kill() }
        let refused = try runCommand(try graftBinary(), ["patch", "-p", String(victim.pid), "value_a", "--return", "9", "--state-dir", state],
                                     environment: ["GRAFT_LOCK_TIMEOUT": "0.3"])
        expectOneLineError(refused, "process \(long.pid) (flock) has held the lock on process \(victim.pid) for over 0.3 s; try again when it has finished")
        #expect(victim.waitForLine("a=1", timeout: 5))
    }

    /// Ctrl-C before anything was written (here: while graft waits for the lock) gives the patch
    /// up: exit 130, one line, nothing written or journaled — not "completed first" once the lock
    /// frees. Ctrl-Z there is held: graft finishes (the target is never left stopped behind a
    /// suspended graft) and suspends itself only then.
    @Test func signalsWhileWaitingForTheLock() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let lock = try lockPath(victim.pid, state: state)
        let pid = String(victim.pid)
        // The holder keeps the lock until its stdin closes (`release()`), not for a fixed time.
        func holdLock() throws -> Victim {
            try Victim.launchCommand("flock", arguments: [lock, "sh", "-c", "echo ready; read line"], stdin: true)
        }
        func startPatch(_ value: Int) throws -> Victim {
            let command = try Victim.launchCommand(try graftBinary(), arguments: ["patch", "-p", pid, "value_a", "--return", String(value), "--state-dir", state],
                                                   waitForReady: false)
            // Waiting for the lock: the lock file is open in graft.
            try waitUntil("graft \(command.pid) to wait for the lock (stderr: \(command.stderrOutput))") { isWaitingForLock(command.pid) }
            return command
        }
        func isWaitingForLock(_ graftPID: Int32) -> Bool {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(graftPID)/fd"))?.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(graftPID)/fd/\($0)")) == lock } ?? false
        }

        let holder = try holdLock()
        defer { holder.kill() }
        let interrupted = try startPatch(9)
        interrupted.signal(SIGINT)
        let status = try #require(interrupted.waitExit(timeout: 10))
        holder.closeStdin()
        #expect(WaitStatus.exitCode(status) == 130, "\(WaitStatus.describe(status))")
        let message = interrupted.stderrOutput
        #expect(message == "graft: error: interrupted by SIGINT before anything was written; the process was not changed\n", "\(message)")
        #expect(holder.waitExit(timeout: 5) != nil)
        #expect(try graft(["list", "-p", pid, "--json"], stateDir: state).stdout.isEmpty)
        #expect(victim.waitForLine("a=1", timeout: 5))

        let second = try holdLock()
        defer { second.kill() }
        let suspended = try startPatch(8)
        suspended.signal(SIGTSTP)
        // Delivered (no longer pending): a default SIGTSTP would have stopped graft by now.
        try waitUntil("SIGTSTP to reach graft \(suspended.pid)") { !signalPending(SIGTSTP, pid: suspended.pid) }
        #expect(suspended.procStatus("State")?.hasPrefix("T") == false, "graft stopped while the operation was pending")
        second.closeStdin()
        #expect(second.waitExit(timeout: 10) != nil)
        #expect(victim.waitForLine("a=8", timeout: 10), "the patch went in once the lock was free")
        try waitUntil("graft \(suspended.pid) to suspend itself once done (state \(suspended.procStatus("State") ?? "gone"))") {
            suspended.procStatus("State")?.hasPrefix("T") == true
        }
        #expect(victim.procStatus("State")?.hasPrefix("t") == false)
        suspended.signal(SIGCONT)
        #expect(suspended.waitExit(timeout: 10).flatMap(WaitStatus.exitCode) == 0)
        _ = try graft(["unpatch", "-p", pid, "--all"], stateDir: state)
        #expect(victim.waitForLine("a=1", timeout: 5))
    }
}

/// Runs `count` copies of `body` on their own threads at once and returns their results in order.
func runConcurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) throws -> [T] {
    let box = ResultBox<T>()
    DispatchQueue.concurrentPerform(iterations: count) { i in
        let r = Result { try body(i) }
        box.lock.withLock { box.results[i] = r }
    }
    return try (0..<count).map { i in try box.results[i]!.get() }
}

private final class ResultBox<T>: @unchecked Sendable {
    let lock = NSLock()
    var results: [Int: Result<T, any Error>] = [:]
}
