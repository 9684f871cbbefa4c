import Foundation
import Glibc
import Testing
import TestSupport

/// A hooked thread that hits thousands of times a second is held on graft's CPU while the session
/// runs (CPUFollower.hold, an AffinityHold) and gets its own CPU mask back at the end.
@Suite struct AffinityCLITests {
    @Test func aHotHookedThreadIsHeldOnGraftsCPUAndReleasedAtTheEnd() throws {
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        guard cpus > 1 else { return }  // nothing to hold on one CPU
        let everyCPU = "0-\(cpus - 1)"
        let victim = try Victim.launch("threads_hot", arguments: ["1"])
        defer { victim.kill() }
        try waitUntil("the worker thread to start") { victim.threadIDs.count == 2 }
        let worker = try #require(victim.threadIDs.first { $0 != victim.pid })
        #expect(allowedCPUs(victim.pid, worker) == everyCPU)
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "-p", String(victim.pid), "hot", "--quiet", "--duration", "60",
                                                                            "--state-dir", temporaryDirectory()],
                                               waitForReady: false)
        defer { session.kill() }
        // Held: the worker's mask is one CPU while the session runs (and the main thread's is not).
        try waitUntil("the hot thread to be held on one CPU (mask \(allowedCPUs(victim.pid, worker) ?? "?"))") {
            guard let mask = allowedCPUs(victim.pid, worker) else { return false }
            return !mask.contains("-") && !mask.contains(",")
        }
        #expect(allowedCPUs(victim.pid, victim.pid) == everyCPU)
        session.signal(SIGINT)
        #expect(session.waitExit(timeout: 30).flatMap(WaitStatus.exitCode) == 130)
        #expect(allowedCPUs(victim.pid, worker) == everyCPU, "the hooked thread's own mask was not put back")
        #expect(victim.isAlive)
    }
}
