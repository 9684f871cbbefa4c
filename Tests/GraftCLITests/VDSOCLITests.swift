import Foundation
import Glibc
import Testing
import TestSupport

/// The vDSO's functions take hooks: by their own names (`linux-vdso:gettimeofday`) and through
/// libc's IFUNCs that resolve to them (`libc:gettimeofday`, `libc:time`, with a notice).
@Suite struct VDSOCLITests {
    func hook(_ locations: [String], extra: [String] = []) throws -> (status: Int32, stdout: String, stderr: String, hits: [String: Int]) {
        let result = try runCommand(try graftBinary(), ["hook"] + locations + ["--json", "-q"] + extra + ["--state-dir", temporaryDirectory(), "--",
                                    try Victims.path("vdso_calls"), "200"], input: "go\n")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("vdso 200 ok"), "\(lines)")
        let summary = try #require(try jsonLines(lines.filter { $0.hasPrefix("{") }.joined(separator: "\n")).last)
        var hits: [String: Int] = [:]
        for hook in summary["hooks"] as? [[String: Any]] ?? [] {
            hits[hook["hook"] as? String ?? ""] = hook["hits"] as? Int
        }
        return (result.status, result.stdout, result.stderr, hits)
    }

    @Test func vdsoFunctionsByTheirNames() throws {
        let result = try hook(["linux-vdso:gettimeofday", "linux-vdso:clock_gettime", "linux-vdso.so.1!time"], extra: ["--returns"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.hits == ["linux-vdso:gettimeofday": 200, "linux-vdso:clock_gettime": 200, "linux-vdso.so.1!time": 200], "\(result.hits)")
        #expect(result.stdout.contains("\"function\":\"linux-vdso.so.1!gettimeofday\""), "\(result.stdout)")
    }

    /// libc's gettimeofday and time are IFUNCs: graft hooks the vDSO function the process calls, and
    /// says so; libc's clock_gettime is an ordinary function (it calls the vDSO's).
    @Test func libcIFUNCsResolveToTheVDSO() throws {
        let result = try hook(["libc:gettimeofday", "libc:time", "libc:clock_gettime"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.hits == ["libc:gettimeofday": 200, "libc:time": 200, "libc:clock_gettime": 200], "\(result.hits)")
        #expect(result.stdout.contains("libc.so.6!gettimeofday is an IFUNC: hooking the implementation this process uses, linux-vdso.so.1!gettimeofday (the vDSO's"),
                "\(result.stdout)")
        #expect(result.stdout.contains("libc.so.6!time is an IFUNC: hooking the implementation this process uses, linux-vdso.so.1!time"))
    }

    /// The vDSO is listed like a module, and its code without a name is `linux-vdso.so.1+0xOFF`.
    @Test func vdsoSymbols() throws {
        let victim = try Victim.launch("vdso_calls", arguments: ["1", "120"], stdin: true)
        defer { victim.kill() }
        let result = try graft(["symbols", "-p", String(victim.pid), "linux-vdso:*", "--json"], stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        let names = Set(try jsonLines(result.stdout).compactMap { $0["name"] as? String })
        #expect(names.isSuperset(of: ["gettimeofday", "__vdso_gettimeofday", "clock_gettime", "time"]), "\(names)")
    }
}
