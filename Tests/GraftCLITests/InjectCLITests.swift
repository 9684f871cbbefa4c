import Foundation
import Glibc
import Testing
import TestSupport

/// `graft inject`, `patch --library`, `list` and `unpatch --all` as a user runs them: the text lines,
/// the JSON events and keys scripts read, the one-line errors.
@Suite struct InjectCLITests {
    @Test func injectPatchListUnpatchWithTextAndJSON() throws {
        let victim = try Victim.launch("price_service", arguments: ["4"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let library = try Victims.path("libfix.so")

        let inject = try graft(["inject", "-p", pid, library], stateDir: state)
        #expect(inject.status == 0, "\(inject.stderr)")
        #expect(inject.stdout.hasPrefix("loaded \(library) into process \(pid) at 0x"), "\(inject.stdout)")
        #expect(inject.stdout.contains("by dlopen on a new thread ("))
        #expect(inject.stdout.contains("its functions are LOCATIONs: libfix:NAME"))
        let again = try graft(["inject", "-p", pid, library, "--json"], stateDir: state)
        let event = try #require(try jsonLines(again.stdout).first)
        #expect(event["event"] as? String == "inject")
        #expect(event["already_loaded"] as? Bool == true)
        let record = try #require(event["library"] as? [String: Any])
        #expect(record["path"] as? String == library)
        #expect((record["build_id"] as? String)?.count == 40)
        #expect((record["base"] as? String)?.hasPrefix("0x") == true)
        #expect(record["loader"] as? String == "dlopen")

        let patch = try graft(["patch", "-p", pid, "price", "--library", library, "--to", "fixed_price", "--json"], stateDir: state)
        #expect(patch.status == 0, "\(patch.stderr)")
        let patched = try #require(try jsonLines(patch.stdout).first)
        #expect(patched["encoding"] as? String == "jmp rel32 to an island (jmp [rip+0])")
        #expect((patched["library"] as? [String: Any])?["path"] as? String == library)
        let trampoline = try #require(patched["trampoline"] as? [String: Any])
        #expect(trampoline["pointer_symbol"] as? String == "libfix.so!graft_original_fixed_price")
        #expect((trampoline["address"] as? String)?.hasPrefix("0x") == true)
        #expect(trampoline["moved_threads"] is [Any])
        #expect(victim.waitForLine(timeout: 5, where: { $0.hasSuffix("price(150)=1500") }) != nil)

        let list = try graft(["list", "-p", pid], stateDir: state)
        #expect(list.stdout.contains("LIBRARY"), "\(list.stdout)")
        #expect(list.stdout.contains("\(library)  loaded"), "\(list.stdout)")
        #expect(list.stdout.contains("patch 1"))
        #expect(list.stdout.contains("jump to libfix.so!fixed_price (trampoline 0x"))
        let listJSON = try jsonLines(try graft(["list", "-p", pid, "--json"], stateDir: state).stdout)
        #expect(listJSON.map { $0["event"] as? String } == ["patch-status", "library-status"])
        #expect(listJSON.last?["used_by"] as? [Int] == [1])

        let unpatch = try graft(["unpatch", "-p", pid, "--all"], stateDir: state)
        #expect(unpatch.status == 0, "\(unpatch.stderr)")
        #expect(unpatch.stdout.contains("patch 1: reverted price_service!price"), "\(unpatch.stdout)")
        #expect(unpatch.stdout.contains("  trampoline at 0x"))
        #expect(unpatch.stdout.contains("library \(library) ("), "\(unpatch.stdout)")
        #expect(victim.waitForLine(timeout: 5, where: { $0.hasSuffix("price(150)=-1500") }) != nil)
        let after = try graft(["list", "-p", pid], stateDir: state)
        #expect(after.stdout.contains("\(library)  unloaded"), "\(after.stdout)")
    }

    @Test func refusalsAreOneLine() throws {
        let victim = try Victim.launch("price_service", arguments: ["1"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        expectOneLineError(try graft(["inject", "-p", pid, "/nonexistent/libx.so"], stateDir: state),
                           "graft will not load /nonexistent/libx.so: it cannot be opened (ENOENT")
        expectOneLineError(try graft(["inject", "-p", pid, try Victims.path("price_service")], stateDir: state),
                           "it is a program (a position-independent executable asking for /lib64/ld-linux-x86-64.so.2), not a library")
        expectOneLineError(try graft(["inject", "-p", pid, try Victims.path("libmissingdep.so")], stateDir: state),
                           "libgraft_gone.so: cannot open shared object file")
        expectOneLineError(try graft(["patch", "-p", pid, "price", "--library", try Victims.path("libfix.so")], stateDir: state),
                           "--library needs --to NAME")
        // A dry run loads nothing: the library must be there already.
        expectOneLineError(try graft(["patch", "-p", pid, "price", "--library", try Victims.path("libfix.so"), "--to", "fixed_price", "--dry-run"],
                                     stateDir: state), "a dry run loads nothing")
        #expect(victim.isAlive)
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        #expect(!maps.contains("libfix.so") && !maps.contains("libmissingdep.so"))
    }

    @Test func dryRunOfALoadedLibraryShowsTheTrampolineAndWritesNothing() throws {
        let victim = try Victim.launch("price_service", arguments: ["1"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let library = try Victims.path("libfix.so")
        #expect(try graft(["inject", "-p", pid, library], stateDir: state).status == 0)
        let dry = try graft(["patch", "-p", pid, "price", "--library", library, "--to", "fixed_price", "--dry-run"], stateDir: state)
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("dry run: would patch price_service!price"), "\(dry.stdout)")
        #expect(dry.stdout.contains("libfix.so!graft_original_fixed_price is a writable pointer"))
        #expect(dry.stdout.contains("trampoline (at its final place its branches are re-aimed)"))
        let list = try graft(["list", "-p", pid], stateDir: state)
        #expect(!list.stdout.contains("patch 1"), "\(list.stdout)")
        #expect(victim.waitForLine(timeout: 5, where: { $0.hasSuffix("price(150)=-1500") }) != nil)
    }
}
