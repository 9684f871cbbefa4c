import Foundation
import Glibc
import Testing
import TestSupport

/// GOT and vtable patches in patch files (issue 16): `graft export` writes the slot's module and
/// build-id, the symbol or class and slot, the target and its library, and the function the slot's
/// word led to; `graft apply` redoes them with `patch --got`/`--vtable`'s checks, idempotently,
/// refusing a slot that leads elsewhere, `--revert` undoing them.
@Suite struct PatchFileSlotCLITests {
    func write(_ text: String, _ name: String = "fix.yaml") throws -> String {
        let path = temporaryDirectory() + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The file's `original:` line replaced (a slot that led elsewhere when it was exported).
    func tampered(_ exported: String, original: String) throws -> String {
        let line = try #require(exported.split(separator: "\n").first { $0.hasPrefix("    original: ") })
        let text = exported.replacingOccurrences(of: String(line), with: "    original: \"\(original)\"")
        #expect(text != exported)
        return text
    }

    func expectNoReplacement(_ victim: Victim, _ marker: String, sourceLocation: SourceLocation = #_sourceLocation) {
        victim.drain()
        let lines = victim.readLines(20)
        #expect(lines.count == 20 && !lines.contains { $0.contains(marker) }, "\(lines)", sourceLocation: sourceLocation)
    }

    @Test(arguments: ["got_lazy", "got_now"])
    func aGOTPatchRoundTrips(victimName: String) throws {
        let victim = try Victim.launch(victimName)
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let library = try Victims.path("libgotfix.so")
        let patched = try graft(["patch", "-p", pid, "--got", "\(victimName):write", "--library", library, "--to", "logged_write"], stateDir: state)
        #expect(patched.status == 0, "\(patched)")
        #expect(victim.waitForLine(where: { $0.hasPrefix("[graft] main ") }) != nil)

        let exported = try graft(["export", "-p", pid], stateDir: state)
        #expect(exported.status == 0 && !exported.stderr.contains("not exported"), "\(exported)")
        for line in ["location: \"\(victimName)!write@got\"", "module: \"\(victimName)\"", "kind: \"got\"", "symbol: \"write\"",
                     "target: \"logged_write\"", "library: \"\(library)\"", "library_build_id: \"", "build_id: \"", "original: \"libc.so.6!"] {
            #expect(exported.stdout.contains(line), "\(line) in \(exported.stdout)")
        }
        #expect(!exported.stdout.contains("new: "))
        let file = try write(exported.stdout)

        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
        expectNoReplacement(victim, "[graft]")

        let dry = try graft(["apply", "-p", pid, file, "--dry-run"], stateDir: state)
        #expect(dry.status == 0 && dry.stdout.contains("would be applied") && dry.stdout.contains("would apply 1 patch in 1 process"), "\(dry)")
        expectNoReplacement(victim, "[graft]")

        let applied = try graft(["apply", "-p", pid, file, "--json"], stateDir: state)
        #expect(applied.status == 0, "\(applied)")
        let events = try jsonLines(applied.stdout)
        #expect(events.count == 1 && events[0]["outcome"] as? String == "applied" && events[0]["kind"] as? String == "got", "\(events)")
        victim.drain()
        #expect(victim.waitForLine(where: { $0.hasPrefix("[graft] main ") }) != nil, "the program's writes go through logged_write again")

        let again = try graft(["apply", "-p", pid, file], stateDir: state)
        #expect(again.status == 0 && again.stdout.contains("already-applied") && again.stdout.contains("nothing to do: every patch is already applied in 1 process"), "\(again)")

        let reverted = try graft(["apply", "--revert", "-p", pid, file], stateDir: state)
        #expect(reverted.status == 0 && reverted.stdout.contains("reverted 1 patch in 1 process"), "\(reverted)")
        expectNoReplacement(victim, "[graft]")

        // A file whose slot led to another function: refused by name, nothing written.
        let refused = try graft(["apply", "-p", pid, try write(try tampered(exported.stdout, original: "libc.so.6!getpid"))], stateDir: state)
        expectOneLineError(refused, "entries refused (process \(pid))")
        #expect(refused.stdout.contains("\(victimName)'s GOT slot for write leads to libc.so.6!") && refused.stdout.contains("not the file's original libc.so.6!getpid; refused"), "\(refused)")
        expectNoReplacement(victim, "[graft]")
        let buildID = try #require(exported.stdout.split(separator: "\n").first { $0.hasPrefix("    build_id:") })
        let otherBuild = exported.stdout.replacingOccurrences(of: String(buildID), with: "    build_id: \"00112233445566778899aabbccddeeff00112233\"")
        let build = try graft(["apply", "-p", pid, try write(otherBuild)], stateDir: state)
        expectOneLineError(build, "entries refused")
        #expect(build.stdout.contains("the file's is 00112233445566778899aabbccddeeff00112233: another build; refused"), "\(build)")
        #expect(victim.isAlive)
    }

    @Test func aVTablePatchRoundTrips() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let library = try Victims.path("libvtfix.so")
        #expect(victim.waitForLine("shapes 12 9 12 12 labeled 8 18 18"))
        let patched = try graft(["patch", "-p", pid, "--vtable", "shapes::Circle", "--method", "area", "--library", library, "--to", "fast_area"], stateDir: state)
        #expect(patched.status == 0, "\(patched)")
        #expect(victim.waitForLine("shapes 120 9 12 12 labeled 8 18 18"))

        let exported = try graft(["export", "-p", pid], stateDir: state)
        #expect(exported.status == 0 && !exported.stderr.contains("not exported"), "\(exported)")
        for line in ["location: \"shapes::Circle::vtable[2] (shapes::Circle::area() const)\"", "module: \"shapes\"", "kind: \"vtable\"",
                     "class: \"shapes::Circle\"", "slot: 2", "method: \"shapes::Circle::area() const\"", "target: \"fast_area\"",
                     "library: \"\(library)\"", "original: \"shapes!"] {
            #expect(exported.stdout.contains(line), "\(line) in \(exported.stdout)")
        }
        let file = try write(exported.stdout)
        let json = try jsonLines(try graft(["export", "-p", pid, "--json"], stateDir: state).stdout)
        #expect(json.count == 1 && json[0]["class"] as? String == "shapes::Circle" && json[0]["slot"] as? Int == 2
                && (json[0]["original"] as? String)?.hasPrefix("shapes!") == true, "\(json)")

        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
        victim.drain()
        #expect(victim.waitForLine("shapes 12 9 12 12 labeled 8 18 18"))

        let applied = try graft(["apply", "-p", pid, file], stateDir: state)
        #expect(applied.status == 0 && applied.stdout.contains(": applied (patch ") && applied.stdout.contains("applied 1 patch in 1 process"), "\(applied)")
        victim.drain()
        #expect(victim.waitForLine("shapes 120 9 12 12 labeled 8 18 18"), "a Circle's area through fast_area again")

        let again = try graft(["apply", "-p", pid, file], stateDir: state)
        #expect(again.status == 0 && again.stdout.contains("nothing to do: every patch is already applied in 1 process"), "\(again)")

        let reverted = try graft(["apply", "--revert", "-p", pid, file], stateDir: state)
        #expect(reverted.status == 0 && reverted.stdout.contains("reverted 1 patch in 1 process"), "\(reverted)")
        victim.drain()
        #expect(victim.waitForLine("shapes 12 9 12 12 labeled 8 18 18"))
        let nothing = try graft(["apply", "--revert", "-p", pid, file], stateDir: state)
        #expect(nothing.status == 0 && nothing.stdout.contains("nothing to revert in 1 process"), "\(nothing)")

        // The slot holds another function than the file's original: refused by name, nothing written.
        let refused = try graft(["apply", "-p", pid, try write(try tampered(exported.stdout, original: "shapes!main"))], stateDir: state)
        expectOneLineError(refused, "entries refused (process \(pid))")
        #expect(refused.stdout.contains("shapes::Circle's vtable slot 2 leads to shapes!") && refused.stdout.contains("not the file's original shapes!main; refused"), "\(refused)")
        victim.drain()
        #expect(victim.readLines(3).allSatisfy { $0 == "shapes 12 9 12 12 labeled 8 18 18" })
        #expect(try jsonLines(try graft(["list", "-p", pid, "--json"], stateDir: state).stdout).allSatisfy { $0["state"] as? String != "applied" })
    }
}
