import Foundation
import Glibc
import Testing
import TestSupport

/// A service, not a process (issue 16): the pre-fork server victim (master + workers, SIGHUP
/// re-forks them) patched through `-p` lists and `-n NAME`, all or nothing or `--each`, and the
/// patches forked workers inherit: recognised, listed, reverted there and with `--children`.
@Suite struct ServiceCLITests {
    /// A pre-fork server under a name no other test uses (so `-n` finds only it), with its
    /// master's and workers' pids.
    struct Server {
        let victim: Victim
        let name: String
        var master: Int32 { victim.pid }
        var workers: [Int32]
    }

    func startServer(workers: Int = 2) throws -> Server {
        let dir = temporaryDirectory()
        let name = "pf\(getpid() % 10000)\(UInt32.random(in: 1000...9999))"
        let copy = dir + "/" + name
        #expect(try runCommand("cp", [try Victims.path("prefork_server"), copy]).status == 0)
        let victim = try Victim.launch(copy, arguments: [String(workers), "30"])
        let line = try #require(victim.waitForLine(timeout: 5) { $0.hasPrefix("workers ") })
        return Server(victim: victim, name: name, workers: line.split(separator: " ").dropFirst().compactMap { Int32($0) })
    }

    /// Waits until `pid` prints `v=value` (its lines: `master PID v=N`, `worker PID v=N`).
    func expectValue(_ server: Server, _ pid: Int32, _ value: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let role = pid == server.master ? "master" : "worker"
        #expect(server.victim.waitForLine("\(role) \(pid) v=\(value)", timeout: 5), "\(role) \(pid) never printed v=\(value)", sourceLocation: sourceLocation)
    }

    @Test func workersForkedAfterAPatchInheritItAndItIsRevertedThere() throws {
        var server = try startServer()
        defer { server.victim.kill() }
        let state = temporaryDirectory()
        let master = String(server.master)
        #expect(try graft(["patch", "-p", master, "handle", "--return", "7"], stateDir: state).status == 0)
        server.victim.signal(SIGHUP)
        let line = try #require(server.victim.waitForLine(timeout: 5) { $0.hasPrefix("reloaded ") })
        server.workers = line.split(separator: " ").dropFirst().compactMap { Int32($0) }
        #expect(server.workers.count == 2)
        for worker in server.workers { expectValue(server, worker, 7) }

        // Recognised in a worker: listed as inherited, and graft's own checks name graft's patch.
        let first = String(server.workers[0])
        let list = try jsonLines(try graft(["list", "-p", first, "--json"], stateDir: state).stdout)
        let inherited = try #require(list.first)
        #expect(inherited["state"] as? String == "applied")
        #expect((inherited["inherited_from"] as? [String: Any])?["pid"] as? Int == Int(server.master), "\(inherited)")
        #expect((inherited["inherited_from"] as? [String: Any])?["patch"] as? Int == 1)
        let text = try graft(["list", "-p", first], stateDir: state)
        #expect(text.stdout.contains("inherited from process \(server.master) (patch 1)"), "\(text)")
        expectOneLineError(try graft(["patch", "-p", first, "handle", "--return", "9"], stateDir: state), "is already patched by graft (patch 1)")
        expectOneLineError(try graft(["hook", "-p", first, "handle", "--count", "1"], stateDir: state), "graft patch 1 is applied there")

        // Reverted in that worker only.
        let unpatch = try graft(["unpatch", "-p", first, "1"], stateDir: state)
        #expect(unpatch.status == 0 && unpatch.stdout.contains("inherited from process \(server.master), patch 1"), "\(unpatch)")
        expectValue(server, server.workers[0], 1)
        expectValue(server, server.workers[1], 7)
        expectValue(server, server.master, 7)

        // --children: the master and every descendant that still has it.
        let all = try graft(["unpatch", "-p", master, "--all", "--children", "--json"], stateDir: state)
        #expect(all.status == 0, "\(all)")
        let reverted = try jsonLines(all.stdout).filter { $0["outcome"] as? String == "reverted" }.compactMap { $0["pid"] as? Int }
        #expect(Set(reverted) == [Int(server.master), Int(server.workers[1])], "\(all.stdout)")
        expectValue(server, server.master, 1)
        expectValue(server, server.workers[1], 1)
        // Nothing graft wrote is left: every process's code is the file's again.
        for pid in [server.master] + server.workers {
            let statuses = try jsonLines(try graft(["list", "-p", String(pid), "--json"], stateDir: state).stdout)
            #expect(statuses.allSatisfy { $0["state"] as? String == "reverted" }, "\(pid): \(statuses)")
        }
    }

    @Test func everyProcessOfAProgramAllOrNothingOrEach() throws {
        let server = try startServer()
        defer { server.victim.kill() }
        let state = temporaryDirectory()
        let everyone = [server.master] + server.workers

        // -n NAME finds the three; symbols and list report each with its pid.
        let symbols = try jsonLines(try graft(["symbols", "-n", server.name, "handle", "--json"], stateDir: state).stdout)
        #expect(Set(symbols.compactMap { $0["pid"] as? Int }) == Set(everyone.map(Int.init)), "\(symbols)")

        // One worker already patched: the patch over all three is refused in it, and none is patched.
        let busy = server.workers[1]
        #expect(try graft(["patch", "-p", String(busy), "handle", "--return", "9"], stateDir: state).status == 0)
        expectValue(server, busy, 9)
        let refused = try graft(["patch", "-n", server.name, "handle", "--return", "5"], stateDir: state)
        expectOneLineError(refused, "process \(busy) refused")
        #expect(refused.stderr.contains("none of the 3 processes was patched"), "\(refused)")
        expectValue(server, server.master, 1)
        expectValue(server, server.workers[0], 1)
        for pid in [server.master, server.workers[0]] {
            let statuses = try jsonLines(try graft(["list", "-p", String(pid), "--json"], stateDir: state).stdout)
            #expect(statuses.isEmpty, "\(pid): \(statuses)")
        }

        // --each: those that accept are patched; the refusal is reported and the exit is 1.
        let each = try graft(["patch", "-n", server.name, "handle", "--return", "5", "--each", "--json"], stateDir: state)
        #expect(each.status == 1, "\(each)")
        let events = try jsonLines(each.stdout)
        #expect(Set(events.filter { $0["event"] as? String == "patch" }.compactMap { $0["pid"] as? Int }) == [Int(server.master), Int(server.workers[0])], "\(events)")
        #expect(events.contains { $0["event"] as? String == "patch-refused" && $0["pid"] as? Int == Int(busy) })
        expectValue(server, server.master, 5)
        expectValue(server, server.workers[0], 5)
        expectValue(server, busy, 9)

        // A pid list and a repeated -p for unpatch.
        let pids = "\(server.master),\(server.workers[0])"
        #expect(try graft(["unpatch", "-p", pids, "-p", String(busy), "--all"], stateDir: state).status == 0)
        for pid in everyone { expectValue(server, pid, 1) }
    }

    @Test func listsOfProcessesWhereOneIsMeant() throws {
        let server = try startServer(workers: 1)
        defer { server.victim.kill() }
        let state = temporaryDirectory()
        let pair = "\(server.master),\(server.workers[0])"
        expectOneLineError(try graft(["trace", "-p", pair, "--duration", "1"], stateDir: state), "-p \(pair): this command works on one process; give one pid")
        expectOneLineError(try graft(["inject", "-p", pair, "/nonexistent.so"], stateDir: state), "inject works on one process")
        expectOneLineError(try graft(["list", "-n", "no-such-program-here"], stateDir: state), "-n no-such-program-here: no process runs a program named no-such-program-here")
        expectOneLineError(try graft(["list", "-p", "\(server.master),-3"], stateDir: state), "-p -3: a process id is a positive number")
        let both = try graft(["list", "-p", "\(server.master) \(server.workers[0])"], stateDir: state)
        #expect(both.status == 0 && both.stdout.contains("process \(server.master) (") && both.stdout.contains("process \(server.workers[0]) ("), "\(both)")
    }

    /// One hook session over every process of a program: events carry their pid, --count counts
    /// them all, and every process is as before afterwards.
    @Test func hookEveryProcessOfAProgram() throws {
        let server = try startServer()
        defer { server.victim.kill() }
        let state = temporaryDirectory()
        let result = try graft(["hook", "-n", server.name, "handle", "--count", "9", "--json"], stateDir: state)
        #expect(result.status == 0, "\(result)")
        let events = try jsonLines(result.stdout)
        let hits = events.filter { $0["event"] as? String == "hit" }
        #expect(hits.count == 9, "\(result.stdout)")
        let everyone = Set(([server.master] + server.workers).map(Int.init))
        #expect(Set(hits.compactMap { $0["pid"] as? Int }) == everyone, "\(hits)")
        #expect(Set(events.filter { $0["event"] as? String == "armed" }.compactMap { $0["pid"] as? Int }) == everyone)
        #expect(events.filter { $0["event"] as? String == "summary" && $0["code_restored"] as? Bool == true }.count == 3)
        for pid in [server.master] + server.workers { expectValue(server, pid, 1) }
    }

    /// --follow: workers forked after the session started (a SIGHUP reload) are hooked too, their
    /// calls reported with their pid; they run on unharmed after the session.
    @Test func hookFollowsWorkersForkedAfterItStarted() throws {
        var server = try startServer()
        defer { server.victim.kill() }
        let state = temporaryDirectory()
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "-p", String(server.master), "handle", "--follow",
                                                                             "--json", "--duration", "4", "--state-dir", state], waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 10) { $0.contains("\"event\":\"armed\"") } != nil)
        server.victim.signal(SIGHUP)
        let line = try #require(server.victim.waitForLine(timeout: 5) { $0.hasPrefix("reloaded ") })
        server.workers = line.split(separator: " ").dropFirst().compactMap { Int32($0) }
        for worker in server.workers {
            let hit = session.waitForLine(timeout: 10) { $0.contains("\"event\":\"hit\",\"pid\":\(worker),") }
            #expect(hit != nil, "no call reported from the new worker \(worker)")
        }
        #expect(session.waitExit(timeout: 15) == 0)
        for pid in [server.master] + server.workers { expectValue(server, pid, 1) }
        for worker in server.workers { #expect(kill(worker, 0) == 0, "worker \(worker) died") }
    }

    /// All or nothing when a write refuses: a --library patch's checks run at its write, so the
    /// first process is patched, the second (no `price` there) refuses, and the first is reverted.
    @Test func aRefusalAtTheWriteRevertsTheProcessesAlreadyPatched() throws {
        let service = try Victim.launch("price_service", arguments: ["1"])
        defer { service.kill() }
        let other = try Victim.launch("c_loop", arguments: ["20"])
        defer { other.kill() }
        let state = temporaryDirectory()
        let library = try Victims.path("libfix.so")
        let result = try graft(["patch", "-p", "\(service.pid),\(other.pid)", "price", "--library", library, "--to", "fixed_price", "--json"], stateDir: state)
        #expect(result.status == 1, "\(result)")
        let events = try jsonLines(result.stdout)
        #expect(events.contains { $0["event"] as? String == "patch-rolled-back" && $0["pid"] as? Int == Int(service.pid) }, "\(events)")
        #expect(events.contains { $0["event"] as? String == "patch-refused" && $0["pid"] as? Int == Int(other.pid) }, "\(events)")
        // The service's price() is its own again: price(150) is still the buggy -1500.
        #expect(service.waitForLine(timeout: 5) { $0.hasSuffix("price(150)=-1500") } != nil)
        let statuses = try jsonLines(try graft(["list", "-p", String(service.pid), "--json"], stateDir: state).stdout)
        #expect(statuses.filter { $0["event"] as? String == "patch-status" }.allSatisfy { $0["state"] as? String == "reverted" }, "\(statuses)")
    }
}
