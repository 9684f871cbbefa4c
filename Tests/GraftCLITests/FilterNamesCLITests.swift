import Foundation
import Glibc
import Testing
import TestSupport

/// `graft hook --filter` on parameters by name (issue 14: `--filter 'qty > 2'`), from the typed
/// arguments' debug information: integers and strings compared, unknown names refused with the real ones.
@Suite struct FilterNamesCLITests {
    func hits(_ filter: String) throws -> [[String: Any]] {
        let result = try runCommand(try graftBinary(), ["hook", "price", "--json", "--filter", filter, "--state-dir", temporaryDirectory(),
                                                        "--", try Victims.path("typed_args"), "4"], input: "go\n")
        #expect(result.status == 0, "\(filter): \(result.stderr)")
        let events = try jsonLines(result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.joined(separator: "\n"))
        return events.filter { $0["event"] as? String == "hit" }
    }

    func hits(_ location: String, _ filter: String) throws -> Int {
        let result = try runCommand(try graftBinary(), ["hook", location, "--returns", "--json", "--filter", filter, "--state-dir", temporaryDirectory(),
                                                        "--", try Victims.path("typed_args"), "4"], input: "go\n")
        #expect(result.status == 0, "\(filter): \(result.stderr)")
        return result.stdout.split(separator: "\n").filter { $0.hasPrefix("{\"event\":\"hit\"") }.count
    }

    /// A value shown by a name compares as that text with a string and as its number with a number:
    /// decoded flags (open's O_RDONLY|O_CLOEXEC = 0x80000), an enumerator (paint's GREEN = 2), and
    /// an output buffer, which at the call is read's pointer (`buf != 0`, as when it was a void *).
    @Test func namedValuesCompareAsTextOrNumber() throws {
        #expect(try hits("libc:open", "path == '/etc/hosts' && flags == 0x80000") == 4)
        #expect(try hits("libc:open", "path == '/etc/hosts' && flags == 'O_RDONLY|O_CLOEXEC'") == 4)
        #expect(try hits("paint", "c == 2 && c == 'GREEN' && level == 200") == 4)
        #expect(try hits("libc:read", "buf != 0 && count == 16") == 4)
        #expect(try hits("libc:read", "buf == 0") == 0)
    }

    @Test func parametersCompareByName() throws {
        #expect(try hits("qty > 2").count == 4)             // price("apple", 3), four rounds
        #expect(try hits("qty > 3").count == 0)
        #expect(try hits("item == \"apple\" && qty == 3").count == 4)
        #expect(try hits("item != 'apple'").count == 0)
        // --args 0: the filter's reads are not shown.
        #expect(try hits("qty == 3").allSatisfy { ($0["args"] as? [Any])?.isEmpty == true })
    }

    @Test func anUnknownNameListsTheParameters() throws {
        let victim = try Victim.launch("typed_args", arguments: ["1000"], stdin: true)
        defer { victim.kill() }
        let result = try graft(["hook", "-p", String(victim.pid), "price", "--filter", "quantity > 2"], stateDir: temporaryDirectory())
        #expect(result.status != 0)
        #expect(result.stderr.contains("no field 'quantity'") && result.stderr.contains("their parameters: item, qty"), "\(result.stderr)")
    }

    /// Launch mode: the names are checked once the program's modules are mapped, at its entry point,
    /// before any of its code runs: a misspelled one is the same one-line error (not a session that
    /// silently matches nothing), the command is killed before it ran (no `ready`), nothing is left.
    @Test func anUnknownNameEndsALaunchedSession() throws {
        let state = temporaryDirectory()
        let result = try runCommand(try graftBinary(), ["hook", "price", "--json", "--filter", "quantity > 2", "--state-dir", state,
                                                        "--", try Victims.path("typed_args"), "4"], input: "go\n")
        expectOneLineError(result, "--filter 'quantity > 2': no field 'quantity'")
        #expect(result.stderr.contains("(their parameters: item, qty)"), "\(result.stderr)")
        #expect(!result.stdout.contains("ready") && !result.stdout.contains("\"event\":\"hit\""), "\(result.stdout)")
        // A function graft knows no types for: said so.
        let untyped = try runCommand(try graftBinary(), ["hook", "libc:wcsncmp", "--filter", "n > 2", "--state-dir", state,
                                                         "--", try Victims.path("ifunc_now"), "4"], input: "go\n")
        expectOneLineError(untyped, "no field 'n'")
        #expect(untyped.stderr.contains("graft found none for these functions"), "\(untyped.stderr)")
        // The right name still runs the command to its end.
        let good = try runCommand(try graftBinary(), ["hook", "price", "-q", "--filter", "qty > 2", "--state-dir", state,
                                                      "--", try Victims.path("typed_args"), "4"], input: "go\n")
        #expect(good.status == 0 && good.stdout.contains("4 calls"), "\(good)")
    }
}
