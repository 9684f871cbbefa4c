import Foundation
import Glibc
import Testing
import TestSupport

/// `graft hook --args N --returns` with types: DWARF of the program (typed_args, -g), of a separate
/// debug file found by build-id (typed_args_stripped, GRAFT_DEBUG_DIR), libc prototypes on a real
/// program, `--raw`, JSON.
@Suite struct TypedArgumentsCLITests {
    /// The text lines of one launch-mode session of `victim` (one round of calls).
    func hook(_ victim: String, _ locations: [String], _ extra: [String] = [], environment: [String: String] = [:], rounds: Int = 1) throws -> [String] {
        let result = try runCommand(try graftBinary(), ["hook"] + locations + ["--args", "4", "--returns", "--state-dir", temporaryDirectory()] + extra
                                        + ["--", try Victims.path(victim), String(rounds)], input: "go\n", environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("done "), "\(result.stdout)")
        return result.stdout.split(separator: "\n").map(String.init)
    }

    /// The part of a hit or return line after `] `, without the duration. A call and its return
    /// on one line (`price(item="apple", qty=3) = 30`) give two entries, as when they come on two
    /// (a loaded machine may hold a return past the printer's wait): `price(item="apple", qty=3)`
    /// and `price returned 30`.
    func calls(_ lines: [String]) -> [String] {
        lines.compactMap { line in line.range(of: "] ").map { String(line[$0.upperBound...]) } }
            .map { $0.replacingOccurrences(of: #" in [0-9.]+ [nµm]?s$"#, with: "", options: .regularExpression) }
            .flatMap { line -> [String] in
                guard let equals = line.range(of: ") = ", options: .backwards) else { return [line] }
                // The `(` that opens the argument list: the one matching that `)` (a Go method's
                // name has parentheses of its own: `main.(*Counter).Add(c=…)`).
                var depth = 0
                var open = equals.lowerBound
                while open > line.startIndex {
                    open = line.index(before: open)
                    if line[open] == ")" { depth += 1 } else if line[open] == "(" { if depth == 0 { break }; depth -= 1 }
                }
                return [String(line[..<equals.lowerBound]) + ")", "\(line[..<open]) returned \(line[equals.upperBound...])"]
            }
    }

    /// The issue's form: `price(item="apple", qty=3) = 30 in 3.1 µs` — the call and its return on
    /// one line when nothing came between them.
    @Test func aCallAndItsReturnOnOneLine() throws {
        let lines = try hook("typed_args", ["price", "name_of"], rounds: 3)
        let combined = lines.filter { $0.range(of: #"\] price\(item="apple", qty=3\) = 30 in [0-9.]+ [nµm]?s$"#, options: .regularExpression) != nil }
        #expect(!combined.isEmpty, "\(lines)")
        #expect(lines.contains { $0.range(of: #"\] name_of\(c=RED\) = "red" in "#, options: .regularExpression) != nil }, "\(lines)")
        // Every call has its return, on its line or its own.
        #expect(calls(lines).filter { $0 == "price returned 30" }.count == 3, "\(lines)")
    }

    static let expected = [
        "price(item=\"apple\", qty=3)", "price returned 30",
        "scale(x=1.5, factor=0.25, times=-2)", "scale returned -0.75",
        "paint(c=GREEN, level=200)", "paint returned BLUE",
        "say(text=\"tab\\there\\n\\\"q\\\"\\x01\")", "say returned void",
        "say(text=\"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl\"...)",
        "initial(c='z')", "initial returned 'Z'",
        "name_of(c=RED)", "name_of returned \"red\"",
    ]

    @Test func dwarfOfTheProgramNamesAndTypesEveryArgument() throws {
        let lines = calls(try hook("typed_args", ["price", "scale", "paint", "say", "initial", "name_of", "area"]))
        for line in TypedArgumentsCLITests.expected { #expect(lines.contains(line), "\(line) not in \(lines)") }
        // A 8-byte struct in one register, a 32-byte struct on the stack (by address), a short.
        let area = try #require(lines.first { $0.hasPrefix("area(") })
        #expect(area.hasPrefix("area(p={0x300000002}, b={…} at 0x7ff") && area.hasSuffix(", s=-7)"), "\(area)")
        #expect(lines.contains("area returned 6"), "\(lines)")
    }

    /// `-p`: types looked up before the attach (prefetch) and at arming; the same lines.
    @Test func attachedProcess() throws {
        let victim = try Victim.launch("typed_args", arguments: ["100000"], stdin: true)
        defer { victim.kill() }
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "-p", String(victim.pid), "price", "paint", "--args", "2", "--returns",
                                                                            "--count", "4", "--state-dir", temporaryDirectory()], waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 20, where: { $0.hasPrefix("hooked typed_args!paint") }) != nil, "\(session.transcript)")
        victim.writeStdin("go\n")
        #expect(session.waitExit(timeout: 20).flatMap(WaitStatus.exitCode) == 0, "\(session.stderrOutput)")
        _ = session.readLines(100, timeout: 5)  // the rest, up to the end of output
        #expect(Array(calls(session.transcript).prefix(4)) == ["price(item=\"apple\", qty=3)", "price returned 30", "paint(c=GREEN, level=200)", "paint returned BLUE"],
                "\(session.transcript)")
    }

    /// Types are looked up at a hook's first call: a hook in the debug registers and one in a library
    /// loaded later get them too.
    @Test func debugRegistersAndLaterLibraries() throws {
        let hardware = calls(try hook("typed_args", ["price", "scale"], ["--hardware"]))
        #expect(hardware.contains("price(item=\"apple\", qty=3)") && hardware.contains("scale returned -0.75"), "\(hardware)")
        let result = try runCommand(try graftBinary(), ["hook", "liblate:late_f", "--args", "1", "--returns", "--state-dir", temporaryDirectory(), "--",
                                                        try Victims.path("dlopen_later"), try Victims.path("liblate.so"), "3"], input: "go\n")
        #expect(result.status == 0, "\(result.stderr)")
        let late = calls(result.stdout.split(separator: "\n").map(String.init))
        #expect(late.contains("liblate:late_f(x=3)") && late.contains("liblate:late_f returned 6"), "\(late)")
    }

    /// `--filter` on parameter names: numbers, strings, enumerators; with -p an unknown name is
    /// refused before the attach.
    @Test func filterOnParameterNames() throws {
        func hits(_ filter: String) throws -> [String] {
            let result = try runCommand(try graftBinary(), ["hook", "price", "paint", "--args", "2", "--filter", filter, "--state-dir", temporaryDirectory(),
                                                            "--", try Victims.path("typed_args"), "2"], input: "go\n")
            #expect(result.status == 0, "\(filter): \(result.stderr)")
            return calls(result.stdout.split(separator: "\n").map(String.init)).filter { $0.contains("(") }
        }
        #expect(try hits("qty == 3") == ["price(item=\"apple\", qty=3)", "price(item=\"apple\", qty=3)"])
        #expect(try hits("qty > 3") == [])
        #expect(try hits("item == \"apple\"").count == 2)
        #expect(try hits("c == \"GREEN\"") == ["paint(c=GREEN, level=200)", "paint(c=GREEN, level=200)"])
        let victim = try Victim.launch("typed_args", arguments: ["100000"], stdin: true)
        defer { victim.kill() }
        expectOneLineError(try graft(["hook", "-p", String(victim.pid), "price", "--filter", "nosuch > 1"], stateDir: temporaryDirectory()), "no field 'nosuch'")
        let session = try graft(["hook", "-p", String(victim.pid), "price", "--filter", "qty == 3", "--duration", "0.2"], stateDir: temporaryDirectory())
        #expect(session.status == 0, "\(session.stderr)")
    }

    @Test func separateDebugFileByBuildID() throws {
        let debug = Victims.directory + "/debug"
        let lines = calls(try hook("typed_args_stripped", ["price", "scale", "paint", "say", "initial", "name_of"],
                                   environment: ["GRAFT_DEBUG_DIR": debug]))
        for line in TypedArgumentsCLITests.expected { #expect(lines.contains(line), "\(line) not in \(lines)") }
        // Without the debug directory the same program has no types: raw registers.
        let raw = calls(try hook("typed_args_stripped", ["price"], environment: ["GRAFT_DEBUG_DIR": temporaryDirectory()]))
        #expect(raw.contains { $0.hasPrefix("price(0x") && $0.contains(", 0x3, ") }, "\(raw)")
        #expect(raw.contains("price returned 0x1e"), "\(raw)")
    }

    @Test func rawShowsRegistersEvenWithTypes() throws {
        let lines = calls(try hook("typed_args", ["price", "scale"], ["--raw"]))
        #expect(lines.contains { $0.hasPrefix("price(0x") && $0.contains(", 0x3, ") }, "\(lines)")
        #expect(lines.contains("price returned 0x1e"), "\(lines)")
        #expect(!lines.contains { $0.contains("item=") || $0.contains("-0.75") }, "\(lines)")
    }

    @Test func jsonArgumentsAreObjects() throws {
        let result = try runCommand(try graftBinary(), ["hook", "price", "scale", "paint", "--args", "3", "--returns", "--json",
                                                        "--state-dir", temporaryDirectory(), "--", try Victims.path("typed_args"), "1"], input: "go\n")
        #expect(result.status == 0, "\(result.stderr)")
        let events = try jsonLines(result.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.joined(separator: "\n"))
        let price = try #require(events.first { $0["event"] as? String == "hit" && $0["hook"] as? String == "price" })
        let args = try #require(price["args"] as? [[String: Any]])
        #expect(args.count == 2, "\(args)")
        #expect(args.first?["name"] as? String == "item" && args.first?["type"] as? String == "const char *"
                && args.first?["value"] as? String == "apple" && args.first?["register"] as? String == "rdi"
                && (args.first?["raw"] as? String)?.hasPrefix("0x") == true, "\(args)")
        #expect(args.last?["name"] as? String == "qty" && args.last?["value"] as? Int == 3 && args.last?["raw"] as? String == "0x3", "\(args)")
        let scale = try #require(events.first { $0["event"] as? String == "hit" && $0["hook"] as? String == "scale" })
        let doubles = try #require(scale["args"] as? [[String: Any]])
        #expect(doubles.map { $0["register"] as? String } == ["xmm0", "xmm1", "rdi"], "\(doubles)")
        #expect(doubles.first?["value"] as? Double == 1.5 && doubles[1]["value"] as? Double == 0.25 && doubles[2]["value"] as? Int == -2)
        let returned = try #require(events.first { $0["event"] as? String == "return" && $0["hook"] as? String == "scale" })
        let typed = try #require(returned["result"] as? [String: Any])
        #expect(typed["value"] as? Double == -0.75 && typed["type"] as? String == "double" && typed["register"] as? String == "xmm0", "\(typed)")
        #expect((returned["value"] as? String)?.hasPrefix("0x") == true, "the raw rax stays under \"value\"")
        let paint = try #require(events.first { $0["event"] as? String == "return" && $0["hook"] as? String == "paint" })
        #expect((paint["result"] as? [String: Any])?["value"] as? String == "BLUE")
        // --raw: the same shape, no type.
        let raw = try runCommand(try graftBinary(), ["hook", "price", "--args", "2", "--json", "--raw",
                                                     "--state-dir", temporaryDirectory(), "--", try Victims.path("typed_args"), "1"], input: "go\n")
        let rawHit = try #require(try jsonLines(raw.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.joined(separator: "\n"))
            .first { $0["event"] as? String == "hit" })
        let rawArgs = try #require(rawHit["args"] as? [[String: Any]])
        #expect(rawArgs.map { $0["register"] as? String } == ["rdi", "rsi"] && rawArgs[1]["value"] as? String == "0x3"
                && rawArgs[1]["name"] as? String == "arg1" && rawArgs[1]["type"] is NSNull, "\(rawArgs)")
    }

    /// Go: DWARF names the parameters, read with Go's register ABI; a string takes two registers
    /// (pointer, length), an interface two, a slice three.
    @Test func goParametersByName() throws {
        let result = try runCommand(try graftBinary(), ["hook", "main.add", "fmt.Fprintf", "--args", "3", "--returns", "--count", "4",
                                                        "--state-dir", temporaryDirectory(), "--", try Victims.path("go_loop"), "1", "20"])
        let lines = calls(result.stdout.split(separator: "\n").map(String.init))
        #expect(lines.contains("main.add(x=3, y=4)") && lines.contains("main.add returned 7"), "\(lines) \(result.stderr)")
        let fprintf = try #require(lines.first { $0.hasPrefix("fmt.Fprintf(") }, "\(lines)")
        #expect(fprintf.hasPrefix("fmt.Fprintf(w={0x") && fprintf.contains(", format=\"a=%d\\n\", a=[]{len=1, cap=1} at 0xc"), "\(fprintf)")
        #expect(lines.contains("fmt.Fprintf returned (n=4, err=nil)"), "\(lines)")  // (n int, err error)
    }

    /// A call that blocks is not held back for its return: `cat`'s read of an empty pipe prints
    /// while it waits; once it returns, its own line says what it read (`with buf="hi\n"`).
    @Test func aBlockedCallPrintsBeforeItReturnsAndItsBufferAfter() throws {
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "libc:read", "--args", "3", "--returns", "--state-dir", temporaryDirectory(),
                                                                            "--", "/bin/cat"], stdin: true, waitForReady: false)
        defer { session.kill() }
        let blocked = session.waitForLine(timeout: 20, where: { $0.contains("] libc:read(fd=0, buf=0x") && $0.hasSuffix(", count=131072)") })
        #expect(blocked != nil, "\(session.transcript)")
        #expect(!session.transcript.contains { $0.contains("libc:read returned") }, "\(session.transcript)")
        session.writeStdin("hi\n")
        #expect(session.waitForLine(timeout: 20, where: { $0.contains("] libc:read returned 3 with buf=\"hi\\n\" in ") }) != nil, "\(session.transcript)")
        session.closeStdin()
        #expect(session.waitExit(timeout: 20).flatMap(WaitStatus.exitCode) == 0, "\(session.stderrOutput)")
    }

    /// A failed call's output buffer is not read: gethostname(host, 1) writes one byte and returns
    /// the `int` -1, which fills eax only (rax 0x00000000ffffffff, not a negative 64-bit value).
    @Test func aFailedIntCallShowsNoOutputBuffer() throws {
        let lines = calls(try hook("typed_args", ["libc:gethostname"], rounds: 2))
        let hits = lines.filter { $0.hasPrefix("libc:gethostname(") }
        #expect(hits.count == 2, "\(lines)")
        #expect(hits.allSatisfy { $0.hasPrefix("libc:gethostname(name=0x") && $0.hasSuffix(", size=1)") }, "\(lines)")
        #expect(lines.filter { $0 == "libc:gethostname returned -1" }.count == 2, "\(lines)")
        #expect(!lines.contains { $0.contains("with name=") }, "\(lines)")

        let json = try runCommand(try graftBinary(), ["hook", "libc:gethostname", "--args", "2", "--returns", "--json", "--state-dir", temporaryDirectory(),
                                                      "--", try Victims.path("typed_args"), "1"], input: "go\n")
        let returns = json.stdout.split(separator: "\n").filter { $0.contains("\"event\":\"return\"") }
        #expect(returns.count == 1 && !returns[0].contains("\"outputs\""), "\(json.stdout)")
    }

    /// Go's several results, as the CLI prints them: a tuple in text, `results` in JSON.
    @Test func goResultsAsATupleAndInJSON() throws {
        let text = try runCommand(try graftBinary(), ["hook", "main.divmod", "main.quorem", "main.lookup", "--args", "2", "--returns", "--count", "4",
                                                      "--state-dir", temporaryDirectory(), "--", try Victims.path("go_typed"), "10", "2"])
        let lines = calls(text.stdout.split(separator: "\n").map(String.init))
        #expect(lines.contains("main.divmod(a=17, b=5)") && lines.contains("main.divmod returned (3, 2)"), "\(lines) \(text.stderr)")
        #expect(lines.contains("main.quorem returned (q=3, r=2)"), "\(lines)")
        #expect(lines.contains("main.lookup(key=\"pear\")") && lines.contains("main.lookup returned (\"green\", nil)"), "\(lines)")
        let json = try runCommand(try graftBinary(), ["hook", "main.quorem", "--args", "2", "--returns", "--count", "1", "--json",
                                                      "--state-dir", temporaryDirectory(), "--", try Victims.path("go_typed"), "10", "2"])
        let event = try #require(try jsonLines(json.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.joined(separator: "\n"))
            .first { $0["event"] as? String == "return" }, "\(json.stdout)")
        let results = try #require(event["results"] as? [[String: Any]], "\(event)")
        #expect(results.map { $0["name"] as? String } == ["q", "r"] && results.map { $0["value"] as? Int } == [3, 2], "\(results)")
        #expect((event["result"] as? [String: Any])?["value"] as? Int == 3, "\(event)")
    }

    /// A Go method's name has a `*` but is no pattern: launch mode (no -p, so no patterns) takes it
    /// when the program's file has that function; one it lacks is still a pattern, refused.
    @Test func goMethodNamesAreLocationsInLaunchMode() throws {
        let result = try runCommand(try graftBinary(), ["hook", "main.(*Counter).Add", "--args", "2", "--returns", "--count", "2",
                                                        "--state-dir", temporaryDirectory(), "--", try Victims.path("go_typed"), "10", "2"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = calls(result.stdout.split(separator: "\n").map(String.init))
        #expect(lines.contains { $0.hasPrefix("main.(*Counter).Add(c=0xc") && $0.hasSuffix(", d=2)") }, "\(lines)")
        #expect(lines.contains("main.(*Counter).Add returned 2"), "\(lines)")
        let missing = try runCommand(try graftBinary(), ["hook", "main.(*Nope).Add", "--state-dir", temporaryDirectory(), "--",
                                                         try Victims.path("go_typed"), "10", "1"])
        #expect(missing.status != 0 && missing.stderr.contains("'main.(*Nope).Add' is a pattern: patterns need -p PID"), "\(missing.stderr)")
    }

    /// libc prototypes on programs nobody here wrote: cat opens, reads and writes; python3 mallocs.
    @Test func libcPrototypesOnARealProgram() throws {
        let file = temporaryDirectory() + "/hello"
        try "hello\tworld\n".write(toFile: file, atomically: true, encoding: .utf8)
        let result = try runCommand(try graftBinary(), ["hook", "libc:open", "libc:read", "libc:write", "libc:close", "--args", "3", "--returns",
                                                        "--state-dir", temporaryDirectory(), "--", "/bin/cat", file])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = calls(result.stdout.split(separator: "\n").map(String.init))
        #expect(lines.contains("libc:open(path=\"\(file)\", flags=O_RDONLY)"), "\(lines)")
        let fd = try #require(lines.first { $0.hasPrefix("libc:open returned ") }.flatMap { Int($0.split(separator: " ").last!) })
        // read's buffer is an output: shown as the call left it, on the call's line once it
        // returned, else after the return value (`returned 12 with buf="…"`).
        #expect(lines.contains("libc:read(fd=\(fd), buf=\"hello\\tworld\\n\", count=131072)")
                || lines.contains("libc:read returned 12 with buf=\"hello\\tworld\\n\""), "\(lines)")
        #expect(lines.contains { $0.hasPrefix("libc:read returned 12") }, "\(lines)")
        #expect(lines.contains("libc:write(fd=1, buf=\"hello\\tworld\\n\", count=12)"), "\(lines)")
        #expect(lines.contains("libc:close(fd=\(fd))"), "\(lines)")

        let python = try runCommand(try graftBinary(), ["hook", "libc:malloc", "libc:free", "--args", "1", "--returns", "--count", "20",
                                                        "--state-dir", temporaryDirectory(), "--", "/usr/bin/python3", "-c", "pass"])
        let pyLines = calls(python.stdout.split(separator: "\n").map(String.init))
        #expect(pyLines.contains { $0.hasPrefix("libc:malloc(size=") && Int($0.dropFirst(17).dropLast()) != nil }, "\(pyLines)")
        #expect(pyLines.contains { $0.hasPrefix("libc:malloc returned 0x") }, "\(pyLines)")
    }
}
