import Foundation
import Glibc
import Testing
import TestSupport

/// Patch files for fleets (issue 16): `graft export` writes a process's patches as YAML and
/// `graft apply` applies them to other processes where the build-id and original bytes match —
/// idempotently, refusing by name, `--revert` undoing them.
@Suite struct PatchFileCLITests {
    func write(_ text: String) throws -> String {
        let path = temporaryDirectory() + "/fix.yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func exportThenApplyOnThreeProcessesIdempotentlyAndRevert() throws {
        let server = try ServiceCLITests().startServer()
        defer { server.victim.kill() }
        let state = temporaryDirectory()
        let master = String(server.master)
        #expect(try graft(["patch", "-p", master, "handle", "--return", "7"], stateDir: state).status == 0)
        let exported = try graft(["export", "-p", master], stateDir: state)
        #expect(exported.status == 0, "\(exported)")
        #expect(exported.stdout.contains("location: \"\(server.name)!handle\"") && exported.stdout.contains("return_value: 7")
                && exported.stdout.contains("build_id: \"") && exported.stdout.contains("original: \"55 48 89 e5"), "\(exported.stdout)")
        let file = try write(exported.stdout)

        // The three processes: the master has it already, both workers get it.
        let applied = try graft(["apply", "-n", server.name, file, "--json"], stateDir: state)
        #expect(applied.status == 0, "\(applied)")
        let events = try jsonLines(applied.stdout)
        #expect(events.count == 3)
        #expect(events.filter { $0["outcome"] as? String == "applied" }.compactMap { $0["pid"] as? Int }.sorted() == server.workers.map(Int.init).sorted(), "\(events)")
        #expect(events.contains { $0["pid"] as? Int == Int(server.master) && $0["outcome"] as? String == "already-applied" })
        for pid in [server.master] + server.workers { ServiceCLITests().expectValue(server, pid, 7) }

        // Again: nothing changes, and it says so.
        let again = try graft(["apply", "-n", server.name, file], stateDir: state)
        #expect(again.status == 0 && again.stdout.contains("nothing to do: every patch is already applied in 3 processes"), "\(again)")

        // --revert: every process back to the original.
        let reverted = try graft(["apply", "--revert", "-n", server.name, file], stateDir: state)
        #expect(reverted.status == 0 && reverted.stdout.contains("reverted 3 patches in 3 processes"), "\(reverted)")
        for pid in [server.master] + server.workers { ServiceCLITests().expectValue(server, pid, 1) }
    }

    @Test func anotherBuildOrOtherBytesAreRefusedByNameAndNothingIsWritten() throws {
        let server = try ServiceCLITests().startServer(workers: 1)
        defer { server.victim.kill() }
        let state = temporaryDirectory()
        let master = String(server.master)
        #expect(try graft(["patch", "-p", master, "handle", "--return", "7"], stateDir: state).status == 0)
        let exported = try graft(["export", "-p", master], stateDir: state).stdout
        let worker = String(server.workers[0])

        let buildID = try #require(exported.split(separator: "\n").first { $0.contains("build_id:") })
        let otherBuild = exported.replacingOccurrences(of: String(buildID), with: "    build_id: \"00112233445566778899aabbccddeeff00112233\"")
        let refused = try graft(["apply", "-p", worker, try write(otherBuild)], stateDir: state)
        expectOneLineError(refused, "entries refused (process \(worker))")
        #expect(refused.stdout.contains("build-id is ") && refused.stdout.contains("the file's is 00112233445566778899aabbccddeeff00112233: another build; refused"), "\(refused)")

        let otherBytes = exported.replacingOccurrences(of: "original: \"55 48 89 e5 8b 05\"", with: "original: \"55 48 89 e5 8b 15\"")
        #expect(otherBytes != exported)
        let bytes = try graft(["apply", "-p", worker, try write(otherBytes)], stateDir: state)
        expectOneLineError(bytes, "entries refused")
        #expect(bytes.stdout.contains("not the file's original bytes 55 48 89 e5 8b 15; refused"), "\(bytes)")
        ServiceCLITests().expectValue(server, server.workers[0], 1)
        #expect(try jsonLines(try graft(["list", "-p", worker, "--json"], stateDir: state).stdout).isEmpty)
    }

    /// A jump's new bytes depend on where things are mapped: apply recomputes them per process.
    @Test func aJumpAppliesToAnotherProcessOfTheProgram() throws {
        let first = try Victim.launch("c_loop", arguments: ["20"])
        defer { first.kill() }
        let second = try Victim.launch("c_loop", arguments: ["20"])
        defer { second.kill() }
        let state = temporaryDirectory()
        #expect(try graft(["patch", "-p", String(first.pid), "value_a", "--to", "value_b"], stateDir: state).status == 0)
        let file = try write(try graft(["export", "-p", String(first.pid)], stateDir: state).stdout)
        let applied = try graft(["apply", "-p", String(second.pid), file], stateDir: state)
        #expect(applied.status == 0 && applied.stdout.contains("applied (patch 1)"), "\(applied)")
        #expect(second.waitForLine("a=2", timeout: 5))
        #expect(try graft(["apply", "--revert", "-p", "\(first.pid),\(second.pid)", file], stateDir: state).status == 0)
        #expect(first.waitForLine("a=1", timeout: 5) && second.waitForLine("a=1", timeout: 5))
    }

    @Test func aFileThatIsNotAPatchFileIsNamed() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        expectOneLineError(try graft(["apply", "-p", pid, try write("graft: 1\npatches:\n  - location: [unclosed\n")], stateDir: state), "patch file ")
        expectOneLineError(try graft(["apply", "-p", pid, try write("patches: []\n")], stateDir: state), "no `graft: 1` line")
        expectOneLineError(try graft(["apply", "-p", pid, try write("graft: 1\npatches:\n  - location: \"c_loop!value_a\"\n    kind: \"return\"\n")], stateDir: state), "patch 1 (line 3): no `module`")
        expectOneLineError(try graft(["apply", "-p", pid, "/nonexistent/fix.yaml"], stateDir: state), "patch file /nonexistent/fix.yaml: cannot read it")
        #expect(victim.readLines(2, timeout: 3) == ["a=1", "a=1"])
    }

    /// A library's function: apply loads the library the file names (same build only); a second
    /// apply finds it applied; --revert takes it back whatever the library file is now.
    @Test func aLibraryPatchAppliesWithItsBuildAndRevertsAnyway() throws {
        let first = try Victim.launch("price_service", arguments: ["1"])
        defer { first.kill() }
        let second = try Victim.launch("price_service", arguments: ["1"])
        defer { second.kill() }
        let state = temporaryDirectory()
        let library = try Victims.path("libfix.so")
        #expect(try graft(["patch", "-p", String(first.pid), "price", "--library", library, "--to", "fixed_price"], stateDir: state).status == 0)
        let exported = try graft(["export", "-p", String(first.pid)], stateDir: state).stdout
        #expect(exported.contains("target: \"fixed_price\"") && exported.contains("library_build_id: \""), "\(exported)")
        let buildID = try #require(exported.split(separator: "\n").first { $0.contains("library_build_id:") })
        let otherBuild = try write(exported.replacingOccurrences(of: String(buildID), with: "    library_build_id: \"00112233445566778899aabbccddeeff00112233\""))
        let refused = try graft(["apply", "-p", String(second.pid), otherBuild], stateDir: state)
        expectOneLineError(refused, "entries refused")
        #expect(refused.stdout.contains("another build of the library; refused"), "\(refused)")
        let file = try write(exported)
        let applied = try graft(["apply", "-p", "\(first.pid),\(second.pid)", file, "--json"], stateDir: state)
        #expect(applied.status == 0, "\(applied)")
        #expect(try jsonLines(applied.stdout).map { $0["outcome"] as? String } == ["already-applied", "applied"], "\(applied)")
        #expect(second.waitForLine(timeout: 5) { $0.hasSuffix("price(150)=1500") } != nil)
        let reverted = try graft(["apply", "--revert", "-p", "\(first.pid),\(second.pid)", otherBuild], stateDir: state)
        #expect(reverted.status == 0 && reverted.stdout.contains("reverted 2 patches in 2 processes"), "\(reverted)")
        #expect(second.waitForLine(timeout: 5) { $0.hasSuffix("price(150)=-1500") } != nil)
    }
}
