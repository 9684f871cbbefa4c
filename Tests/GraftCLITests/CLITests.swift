import Foundation
import Glibc
import Testing
import TestSupport

/// The built `graft` binary, next to this test bundle in .build/<config>/.
func graftBinary() throws -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let exe = String(decoding: buffer[0..<max(0, n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var dir = exe
    while !dir.isEmpty {
        dir = String(dir[..<(dir.lastIndex(of: "/") ?? dir.startIndex)])
        if access(dir + "/graft", X_OK) == 0 { return dir + "/graft" }
        if dir.hasSuffix("/.build") { break }
    }
    throw CLIError.missing("graft binary not found near \(exe); run `swift build` first")
}

enum CLIError: Error { case missing(String) }

func temporaryDirectory() -> String {
    var template = Array("/tmp/graft-cli-test-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

/// Runs graft with a private journal directory.
func graft(_ arguments: [String], stateDir: String) throws -> (status: Int32, stdout: String, stderr: String) {
    try runCommand(try graftBinary(), arguments + ["--state-dir", stateDir])
}

/// Every stdout line parsed as a JSON object.
func jsonLines(_ text: String) throws -> [[String: Any]] {
    try text.split(separator: "\n").map { line in
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try #require(object as? [String: Any], "not an object: \(line)")
    }
}

/// The failure contract: non-zero exit, exactly one stderr line `graft: error: …`, containing `fragment`.
func expectOneLineError(_ result: (status: Int32, stdout: String, stderr: String), _ fragment: String,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.status != 0, sourceLocation: sourceLocation)
    let lines = result.stderr.split(separator: "\n")
    #expect(lines.count == 1, "stderr: \(result.stderr)", sourceLocation: sourceLocation)
    #expect(result.stderr.hasPrefix("graft: error: "), "stderr: \(result.stderr)", sourceLocation: sourceLocation)
    #expect(result.stderr.contains(fragment), "stderr: \(result.stderr)", sourceLocation: sourceLocation)
    #expect(!result.stderr.contains("Fatal error") && !result.stderr.contains("errno "), sourceLocation: sourceLocation)
}

@Suite struct CLITests {
    @Test func patchListUnpatchAcrossInvocationsWithJSON() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)

        let symbols = try graft(["symbols", "-p", pid, "value_*", "--json"], stateDir: state)
        #expect(symbols.status == 0)
        let found = try jsonLines(symbols.stdout)
        #expect(found.compactMap { $0["name"] as? String }.sorted() == ["value_a", "value_b", "value_c"])
        #expect(found.allSatisfy { $0["event"] as? String == "symbol" && ($0["address"] as? String)?.hasPrefix("0x") == true })

        let patch = try graft(["patch", "-p", pid, "value_a", "--to", "value_b", "--json"], stateDir: state)
        #expect(patch.status == 0, "\(patch.stderr)")
        let event = try #require(try jsonLines(patch.stdout).first)
        #expect(event["event"] as? String == "patch")
        #expect(event["id"] as? Int == 1)
        #expect(event["kind"] as? String == "jump")
        #expect((event["new_bytes"] as? String)?.hasPrefix("e9") == true)
        #expect(event["stop_window_ns"] as? Int ?? 0 > 0)
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=2" }) != nil)

        let list = try graft(["list", "-p", pid, "--json"], stateDir: state)
        let statuses = try jsonLines(list.stdout)
        #expect(statuses.count == 1)
        #expect(statuses.first?["event"] as? String == "patch-status")
        #expect(statuses.first?["state"] as? String == "applied")

        let text = try graft(["list", "-p", pid], stateDir: state)
        #expect(text.stdout.contains("applied"))
        #expect(text.stdout.contains("c_loop!value_a"))

        let unpatch = try graft(["unpatch", "-p", pid, "1", "--json"], stateDir: state)
        #expect(unpatch.status == 0, "\(unpatch.stderr)")
        let reverted = try #require(try jsonLines(unpatch.stdout).first)
        #expect(reverted["outcome"] as? String == "reverted")
        #expect(reverted["stop_window_ns"] as? Int ?? 0 > 0)
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
        // Nothing left to write: graft does not stop the process, and says no window.
        let nothing = try graft(["unpatch", "-p", pid, "1", "--json"], stateDir: state)
        let already = try #require(try jsonLines(nothing.stdout).first)
        #expect(already["outcome"] as? String == "already-reverted" && already["stop_window_ns"] == nil, "\(already)")
        let again = try graft(["list", "-p", pid, "--json"], stateDir: state)
        #expect(try jsonLines(again.stdout).first?["state"] as? String == "reverted")
    }

    @Test func dryRunPrintsBytesAndDisassemblyAndWritesNothing() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let result = try graft(["patch", "-p", String(victim.pid), "value_a", "--return", "42", "--dry-run"], stateDir: state)
        #expect(result.status == 0)
        #expect(result.stdout.contains("dry run"))
        #expect(result.stdout.contains("b8 2a 00 00 00 c3"))
        #expect(result.stdout.contains("mov eax, 0x2a"))
        #expect(result.stdout.contains("push rbp"))
        #expect(victim.waitForLine(timeout: 2, where: { $0 == "a=1" }) != nil)
        let list = try graft(["list", "-p", String(victim.pid)], stateDir: state)
        #expect(list.stdout.contains("no patches"))
    }

    @Test func errorsAreOneSpecificLine() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        expectOneLineError(try graft(["patch", "-p", pid, "value_aa", "--return", "1"], stateDir: state), "did you mean value_a")
        expectOneLineError(try graft(["patch", "-p", pid, "value_a+2", "--return", "1"], stateDir: state), "not an instruction boundary")
        expectOneLineError(try graft(["patch", "-p", pid, "nosuchlib:value_a", "--return", "1"], stateDir: state), "no module 'nosuchlib'")
        expectOneLineError(try graft(["patch", "-p", pid, "value_a"], stateDir: state), "--to")
        expectOneLineError(try graft(["patch", "-p", pid, "value_a", "--to", "value_b", "--return", "3"], stateDir: state), "exactly one")
        expectOneLineError(try graft(["unpatch", "-p", pid, "7"], stateDir: state), "no patch 7")
        expectOneLineError(try graft(["list", "-p", "999999999"], stateDir: state), "no process with PID 999999999")
        expectOneLineError(try graft(["patch", "-p", pid, "value_a", "--return", "1", "--bogus"], stateDir: state), "--bogus")
        expectOneLineError(try graft(["patch", "-p", pid, "", "--return", "1"], stateDir: state), "invalid location")
        #expect(victim.isAlive)
    }

    @Test func permissionDeniedNamesTheReason() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let state = temporaryDirectory()
        chmod(state, 0o777)
        // Run graft as nobody against a root process.
        let result = try runCommand("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                                                          try graftBinary(), "patch", "-p", String(victim.pid), "value_a", "--return", "1",
                                                          "--state-dir", state])
        expectOneLineError(result, "permission denied")
        #expect(result.stderr.contains("uid 0") || result.stderr.contains("CAP_SYS_PTRACE"), "\(result.stderr)")
    }

    @Test func alreadyTracedNamesTheTracer() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        // strace-like: a gdb holding the process.
        let state = temporaryDirectory()
        let gdbVictim = victim.pid
        let holder = try Victim.launchCommand("/usr/bin/gdb", arguments: ["-q", "-nx", "-p", String(gdbVictim), "-ex", "echo ready\\n", "-ex", "shell sleep 20"])
        defer { holder.kill() }
        try waitUntil("gdb to attach to \(gdbVictim)", timeout: 60) { (ProcFSLite.tracerPid(gdbVictim) ?? 0) != 0 }
        let result = try graft(["patch", "-p", String(gdbVictim), "value_a", "--return", "1"], stateDir: state)
        expectOneLineError(result, "already traced by")
        #expect(result.stderr.contains("(gdb)"), "\(result.stderr)")
    }

    @Test func reusedPIDIsNeverTouched() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = victim.pid
        // A journal left by an earlier process that had the same PID (another start time), claiming
        // a patch at value_a's address.
        let start = try #require(ProcFSLite.startTime(pid))
        let symbols = try jsonLines(try graft(["symbols", "-p", String(pid), "value_a", "--json"], stateDir: state).stdout)
        let address = try #require(symbols.first?["address"] as? String)
        let stale = """
        {"executable":"/old","nextID":2,"patches":[{"address":"\(address)","appliedAt":"2026-01-01T00:00:00Z","function":"old!value_a","id":1,"kind":"return","module":"/old","newBytes":"31c0c3","originalBytes":"554889","returnValue":0,"state":"applied"}],"pid":\(pid),"startTime":\(start - 1)}
        """
        _ = FileManager.default.createFile(atPath: "\(state)/\(pid)-\(start - 1).json", contents: Data(stale.utf8))
        let list = try graft(["list", "-p", String(pid)], stateDir: state)
        #expect(list.stdout.contains("no patches"), "\(list.stdout)")
        let unpatch = try graft(["unpatch", "-p", String(pid), "--all"], stateDir: state)
        #expect(unpatch.status == 0)
        #expect(unpatch.stdout.contains("no applied patches"))
        #expect(victim.waitForLine(timeout: 2, where: { $0 == "a=1" }) != nil)
    }

    @Test func demoRunsToTheEnd() throws {
        let result = try runCommand(try graftBinary(), ["demo", "--interval", "20"], timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("value_a() = 2"))
        #expect(result.stdout.contains("price(3) = 0"))
        #expect(result.stdout.contains("reverted"))
        #expect(result.stderr.contains("already patched by graft"))
        #expect(result.stderr.contains("not an instruction boundary"))
    }

    @Test func helpAndVersionExitZero() throws {
        let help = try runCommand(try graftBinary(), ["--help"])
        #expect(help.status == 0)
        for command in ["symbols", "patch", "list", "unpatch", "demo"] { #expect(help.stdout.contains(command)) }
        let completion = try runCommand(try graftBinary(), ["--generate-completion-script", "bash"])
        #expect(completion.status == 0)
        #expect(completion.stdout.contains("unpatch"))
    }
}

/// /proc fields the CLI tests read without linking GraftKit (they test the binary).
enum ProcFSLite {
    static func field(_ pid: Int32, _ key: String) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            return line.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces)
        }
        return nil
    }
    static func tracerPid(_ pid: Int32) -> Int32? { field(pid, "TracerPid").flatMap { Int32($0) } }
    static func startTime(_ pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
        let rest = text[text.index(after: close)...].split(separator: " ")
        return rest.count > 19 ? UInt64(rest[19]) : nil
    }
}

/// Refusals the first tests did not reach.
@Suite struct MoreRefusalTests {
    /// A thread blocked in clock_nanosleep resumes at its `syscall` (restart) or just after it: a
    /// patch over those bytes is refused, naming the thread, and nothing is written.
    @Test func aThreadBlockedInsideTheBytesIsNamed() throws {
        let victim = try Victim.launch("c_loop", arguments: ["500"])
        defer { victim.kill() }
        // Until it is blocked in clock_nanosleep (230; nanosleep is 35), /proc/PID/syscall says "running".
        try waitUntil("c_loop to block in its sleep") { [35, 230].contains(blockedSyscall(pid: victim.pid, tid: victim.pid) ?? -1) }
        // /proc/PID/syscall: "nr args… sp pc" while blocked; pc is just past the syscall instruction.
        let fields = try #require(readTextFile("/proc/\(victim.pid)/syscall")).split(separator: " ")
        let pc = try #require(fields.last.flatMap { UInt64($0.dropFirst(2).trimmingSuffix("\n"), radix: 16) })
        let state = temporaryDirectory()
        let location = "0x" + String(pc - 2, radix: 16)
        // Inside libc's read, past its prologue: --mid-function gets past the stack check to the
        // check under test.
        let result = try graft(["patch", "-p", String(victim.pid), location, "--return", "5", "--mid-function"], stateDir: state)
        expectOneLineError(result, "thread \(victim.pid) is executing inside the bytes to be overwritten")
        let dryRun = try graft(["patch", "-p", String(victim.pid), location, "--return", "5", "--dry-run", "--mid-function"], stateDir: state)
        #expect(dryRun.status == 0, "memory must still hold the file's bytes: \(dryRun.stderr)")
        #expect(try graft(["list", "-p", String(victim.pid)], stateDir: state).stdout.contains("no patches") ||
                (try graft(["list", "-p", String(victim.pid), "--json"], stateDir: state).stdout.isEmpty))
        #expect(victim.isAlive)
    }
}

extension MoreRefusalTests {
    @Test func symbolsWithNoMatchPrintOnlyTheError() throws {
        let victim = try Victim.launch("c_loop", arguments: ["50"])
        defer { victim.kill() }
        for extra in [[], ["--json"]] {
            let result = try graft(["symbols", "-p", String(victim.pid), "nosuch*"] + extra, stateDir: temporaryDirectory())
            expectOneLineError(result, "nosuch*")
            #expect(result.stdout.isEmpty, "\(extra): \(result.stdout)")
        }
    }
}

private extension Substring {
    func trimmingSuffix(_ suffix: String) -> Substring { hasSuffix(suffix) ? dropLast(suffix.count) : self }
}

extension MoreRefusalTests {
    /// Someone else writes over graft's jump: `list` says `changed`, `unpatch` leaves those bytes
    /// alone and fails; restoring the original bytes by hand makes the patch `not-present`.
    @Test func bytesChangedBySomeoneElseAreLeftAlone() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let patched = try graft(["patch", "-p", pid, "value_a", "--return", "7", "--json"], stateDir: state)
        #expect(patched.status == 0, "\(patched.stderr)")
        let event = try #require(try jsonLines(patched.stdout).first)
        let address = try #require((event["address"] as? String).flatMap { UInt64($0.dropFirst(2), radix: 16) })
        let original = try #require(event["original_bytes"] as? String)
        // Another tool writes a different stub (`mov eax, 9; ret` would change the output) — here one
        // byte: the 7 of `mov eax, 7` becomes 8.
        func poke(_ bytes: [UInt8], at offset: UInt64) { writeMemory(victim.pid, at: address + offset, bytes) }
        poke([8], at: 1)
        let list = try graft(["list", "-p", pid, "--json"], stateDir: state)
        #expect(list.stdout.contains("\"state\":\"changed\""), "\(list.stdout)")
        let unpatch = try graft(["unpatch", "-p", pid, "--all"], stateDir: state)
        expectOneLineError(unpatch, "patch 1: memory at ")
        #expect(unpatch.stderr.contains("someone else changed it"), "\(unpatch.stderr)")
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=8" }) != nil, "graft must not have touched the other tool's bytes")
        // Put the file's bytes back by hand: the patch is no longer present.
        var bytes: [UInt8] = []
        var index = original.startIndex
        while index < original.endIndex {
            let next = original.index(index, offsetBy: 2)
            bytes.append(UInt8(original[index..<next], radix: 16)!)
            index = next
        }
        poke(bytes, at: 0)
        let after = try graft(["list", "-p", pid, "--json"], stateDir: state)
        #expect(after.stdout.contains("\"state\":\"not-present\""), "\(after.stdout)")
        _ = victim.drain()
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
        // A still-applied patch cannot be forgotten.
        let second = try graft(["patch", "-p", pid, "value_b", "--return", "5"], stateDir: state)
        #expect(second.status == 0, "\(second.stderr)")
        expectOneLineError(try graft(["unpatch", "-p", pid, "--forget", "2"], stateDir: state), "patch 2 is applied")
        expectOneLineError(try graft(["unpatch", "-p", pid, "--forget", "--all"], stateDir: state), "--forget takes patch ids")
        #expect(try graft(["unpatch", "-p", pid, "2"], stateDir: state).status == 0)
    }
}

extension MoreRefusalTests {
    /// A target beyond ±2 GiB (libc from a PIE executable) gets the 14-byte `jmp [rip+0]`, live.
    @Test func farJumpRedirectsLiveAndReverts() throws {
        let victim = try Victim.launch("c_loop", arguments: ["10"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let result = try graft(["patch", "-p", pid, "value_a", "--to", "libc:getpid", "--json"], stateDir: state)
        #expect(result.status == 0, "\(result.stderr)")
        let event = try #require(try jsonLines(result.stdout).first)
        #expect((event["new_bytes"] as? String)?.count == 28, "\(event["new_bytes"] ?? "")")   // 14 bytes
        #expect((event["new_instructions"] as? [[String: Any]])?.first?["text"] as? String == "jmp qword ptr [rip]")
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=\(victim.pid)" }) != nil, "value_a now returns getpid()")
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
        _ = victim.drain()
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
        let check = try graft(["patch", "-p", pid, "value_a", "--return", "0", "--dry-run"], stateDir: state)
        #expect(check.status == 0, "the file's bytes are back: \(check.stderr)")
    }
}

extension MoreRefusalTests {
    /// Two patches someone else overwrote: one line each on stdout, one `graft: error:` line that
    /// names both and the way out.
    @Test func severalChangedPatchesGiveOneErrorLine() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        for function in ["value_a", "value_b"] {
            let patched = try graft(["patch", "-p", pid, function, "--return", "7", "--json"], stateDir: state)
            let event = try #require(try jsonLines(patched.stdout).first)
            let address = try #require((event["address"] as? String).flatMap { UInt64($0.dropFirst(2), radix: 16) })
            writeMemory(victim.pid, at: address + 1, [8])  // mov eax, 7 -> mov eax, 8
        }
        let unpatch = try graft(["unpatch", "-p", pid, "--all"], stateDir: state)
        expectOneLineError(unpatch, "patches 1 2 not reverted (see above)")
        #expect(unpatch.stderr.contains("--forget"), "\(unpatch.stderr)")
        #expect(unpatch.stdout.contains("patch 1: not reverted: memory at ") && unpatch.stdout.contains("patch 2: not reverted: memory at "), "\(unpatch.stdout)")
        let json = try graft(["unpatch", "-p", pid, "--all", "--json"], stateDir: state)
        expectOneLineError(json, "patches 1 2 not reverted (see the JSON events)")
        #expect(try jsonLines(json.stdout).map { $0["outcome"] as? String } == ["changed", "changed"])
        // Forgotten: out of the journal, memory as the other tool left it.
        let forgotten = try graft(["unpatch", "-p", pid, "--forget", "1", "2", "--json"], stateDir: state)
        #expect(forgotten.status == 0, "\(forgotten.stderr)")
        #expect(try jsonLines(forgotten.stdout).map { $0["outcome"] as? String } == ["forgotten", "forgotten"])
        #expect(try graft(["list", "-p", pid], stateDir: state).stdout.contains("no patches"))
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=8" }) != nil, "forgetting writes nothing")
    }
}

/// Writes `bytes` into process `pid` through /proc/PID/mem, as another tool would.
func writeMemory(_ pid: Int32, at address: UInt64, _ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
    let fd = open("/proc/\(pid)/mem", O_RDWR)
    defer { close(fd) }
    var copy = bytes
    #expect(pwrite(fd, &copy, copy.count, off_t(address)) == copy.count, sourceLocation: sourceLocation)
}

/// The journal: a reverted record is never judged by memory alone, and a damaged file is one
/// error line before anything runs.
@Suite struct JournalCLITests {
    /// Patch 1 reverted, then patch 2 writes the same bytes: `list` shows 1 reverted and 2 applied,
    /// and `unpatch 1` writes nothing (it used to revert patch 2's bytes, or call them "changed").
    @Test(arguments: ["7", "8"]) func aRevertedRecordStaysRevertedWhateverMemoryHolds(second value: String) throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        #expect(try graft(["patch", "-p", pid, "value_a", "--return", "7"], stateDir: state).status == 0)
        #expect(try graft(["unpatch", "-p", pid, "1"], stateDir: state).status == 0)
        #expect(victim.waitForLine("a=1", timeout: 5))
        #expect(try graft(["patch", "-p", pid, "value_a", "--return", value], stateDir: state).status == 0)
        let states = try jsonLines(try graft(["list", "-p", pid, "--json"], stateDir: state).stdout).map { $0["state"] as? String }
        #expect(states == ["reverted", "applied"], "\(states)")
        let again = try graft(["unpatch", "-p", pid, "1", "--json"], stateDir: state)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try jsonLines(again.stdout).first?["outcome"] as? String == "already-reverted")
        _ = victim.drain()
        #expect(victim.waitForLine("a=\(value)", timeout: 5), "patch 2 is still in")
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
        #expect(victim.waitForLine("a=1", timeout: 5))
    }

    /// A record edited by hand (bytes not hex, lengths that differ) and broken JSON: one line
    /// naming the problem, for list and unpatch alike — never a trap inside the stop window.
    @Test func aDamagedJournalIsOneErrorLine() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        #expect(try graft(["patch", "-p", pid, "value_a", "--return", "7"], stateDir: state).status == 0)
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: state).first(where: { $0.hasSuffix(".json") }))
        let file = state + "/" + name
        let good = try #require(readTextFile(file))
        func damaged(_ edit: (inout [String: Any]) -> Void) throws -> String {
            var object = try #require(try JSONSerialization.jsonObject(with: Data(good.utf8)) as? [String: Any])
            var patches = try #require(object["patches"] as? [[String: Any]])
            edit(&patches[0])
            object["patches"] = patches
            return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
        }
        let cases: [(String, String)] = [
            (try damaged { $0["newBytes"] = "zz" }, "patch 1: newBytes \"zz\" are not hex bytes"),
            (try damaged { $0["originalBytes"] = "554889" }, "patch 1: 3 original bytes but 6 new ones"),
            (try damaged { $0["address"] = "12" }, "patch 1: address \"12\" is not a 0x hex address"),
            (String(good.dropLast(5)), "not valid JSON"),
            (try damaged { $0.removeValue(forKey: "state") }, "no \"state\" in patches[0]"),
        ]
        for (text, problem) in cases {
            #expect(FileManager.default.createFile(atPath: file, contents: Data(text.utf8)))
            for command in [["list"], ["unpatch", "--all"]] {
                let result = try graft([command[0], "-p", pid] + command.dropFirst(), stateDir: state)
                expectOneLineError(result, "not a graft journal (\(problem)); move it away to start afresh")
            }
        }
        #expect(victim.waitForLine("a=7", timeout: 5), "the patch is untouched")
        #expect(FileManager.default.createFile(atPath: file, contents: Data(good.utf8)))
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
        // An empty journal directory would be `/`.
        expectOneLineError(try graft(["list", "-p", pid], stateDir: ""), "the journal directory is an empty path")
        expectOneLineError(try runCommand(try graftBinary(), ["list", "-p", pid, "--state-dir", state], environment: ["GRAFT_LOCK_TIMEOUT": "nan"]),
                           "GRAFT_LOCK_TIMEOUT=nan is not a number of seconds")
    }
}
