import Foundation
import Glibc
import Testing
import TestSupport

/// Code without a symbol (a stripped program's PLT, the stripped libc's and ld.so's static
/// functions) is `module+0xOFF` in every output of a trace, as hooks and backtraces spell it — never
/// `null` or `??`.
@Suite struct TraceUnnamedCLITests {
    @Test func codeWithoutASymbolIsModulePlusOffsetEverywhere() throws {
        let dir = temporaryDirectory()
        func trace(_ extra: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            try runCommand(try graftBinary(), ["trace", "--steps", "3000", "--json", "--state-dir", dir] + extra + ["--",
                           try Victims.path("hook_backtrace_stripped")], input: "go\n")
        }
        let result = try trace([])
        #expect(result.status == 0, "\(result.stderr)")
        let events = try jsonLines(result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.joined(separator: "\n"))
        let steps = events.filter { $0["event"] as? String == "step" }
        let summary = try #require(events.last { $0["event"] as? String == "summary" })
        let functions = summary["functions"] as? [[String: Any]] ?? []
        let tree = summary["tree"] as? [[String: Any]] ?? []
        #expect(steps.count == 3000 && !functions.isEmpty && !tree.isEmpty)
        var unnamed = Set<String>()
        for entry in steps + functions + tree {
            let module = entry["module"] as? String
            let function = entry["function"] as? String
            #expect(function != nil && module != nil, "\(entry)")
            guard let module, let function, function.hasPrefix(module + "+0x") else { continue }
            #expect(UInt64(function.dropFirst(module.count + 3), radix: 16) != nil, "\(function)")
            unnamed.insert(function)
        }
        // ld.so's static functions (the lazy binding of printf) and the program's PLT have no symbol.
        #expect(unnamed.contains { $0.hasPrefix("ld-linux-x86-64.so.2+0x") }, "\(unnamed)")
        #expect(functions.contains { $0["function"] as? String == "main" })
        // --folded prints the summary only; the file names the same code the same way.
        let foldedRun = try trace(["--folded", "\(dir)/t.folded"])
        #expect(foldedRun.status == 0, "\(foldedRun.stderr)")
        let folded = try #require(readTextFile("\(dir)/t.folded"))
        #expect(!folded.contains("??") && folded.contains("ld-linux-x86-64.so.2+0x"), "\(folded)")
        for name in unnamed { #expect(folded.contains(name), "\(name) missing from the folded stacks") }
        // Such a name is a LOCATION graft takes.
        let victim = try Victim.launch("hook_backtrace_stripped", stdin: true)
        defer { victim.kill() }
        let name = try #require(unnamed.first { $0.hasPrefix("ld-linux-x86-64.so.2+0x") })
        let plan = try graft(["patch", "-p", String(victim.pid), name, "--return", "0", "--dry-run"], stateDir: dir)
        #expect(plan.status == 0 && plan.stdout.contains("dry run: would patch \(name) at 0x"), "\(plan)")
    }
}
