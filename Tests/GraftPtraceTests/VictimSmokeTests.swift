import Glibc
import Testing
import TestSupport

// Smoke tests of the victims (TestTargets/) and of TestSupport itself: every victim builds, prints
// `ready` and its documented output, has the symbols and bytes tests rely on, and dies when asked.

/// nm output: symbol name -> (address, size, type letter). `dynamic` reads .dynsym (nm -D).
private func symbols(_ binary: String, dynamic: Bool = false) throws -> [String: (address: UInt64, size: UInt64, type: String)] {
    let r = try runCommand("nm", (dynamic ? ["-D"] : []) + ["-S", binary])
    #expect(r.status == 0, "nm \(binary): \(r.stderr)")
    var result: [String: (address: UInt64, size: UInt64, type: String)] = [:]
    for line in r.stdout.split(separator: "\n") {
        let f = line.split(separator: " ")
        guard f.count == 4, let address = UInt64(f[0], radix: 16), let size = UInt64(f[1], radix: 16) else { continue }
        result[String(f[3])] = (address, size, String(f[2]))
    }
    return result
}

/// The instructions of `symbol` as objdump -d -w shows them: (bytes, text).
private func disassemble(_ binary: String, _ symbol: String) throws -> [(bytes: [UInt8], text: String)] {
    let r = try runCommand("objdump", ["-d", "-w", binary])
    #expect(r.status == 0, "objdump \(binary): \(r.stderr)")
    var result: [(bytes: [UInt8], text: String)] = []
    var inside = false
    for line in r.stdout.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasSuffix(" <\(symbol)>:") { inside = true; continue }
        guard inside else { continue }
        if line.isEmpty { break }
        let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard fields.count >= 2 else { continue }
        let bytes = fields[1].split(separator: " ").compactMap { UInt8($0, radix: 16) }
        result.append((bytes, fields.dropFirst(2).joined(separator: " ")))
    }
    return result
}

private func headBytes(_ binary: String, _ symbol: String, _ count: Int) throws -> [UInt8] {
    Array(try disassemble(binary, symbol).flatMap(\.bytes).prefix(count))
}

/// Numbers after the first word of a line like `counters 1 2 3`.
private func numbers(_ line: String?) -> [UInt64] {
    (line ?? "").split(separator: " ").dropFirst().compactMap { UInt64($0) }
}

@Suite struct VictimSmokeTests {
    @Test func buildIsCompleteAndIncremental() throws {
        try Victims.build()
        for name in ["c_loop", "c_loop_nopie", "c_loop_stripped", "c_loop_endbr", "threads_hot", "tiny_funcs",
                     "branch_back", "rip_relative", "call_in_head", "blocking_read", "go_loop"] {
            let path = try Victims.path(name)
            #expect(path == Victims.directory + "/" + name)
            #expect(access(path, X_OK) == 0, "\(name) is not executable")
        }
        #expect(Victims.directory.hasPrefix("/"))
        // Built once: make -q says everything is up to date (status 0).
        let q = try runCommand("make", ["-q", "-C", Victims.packageRoot + "/TestTargets", "OUT=" + Victims.directory])
        #expect(q.status == 0, "make -q: \(q.stdout)\(q.stderr)")
    }

    @Test(arguments: ["c_loop", "c_loop_nopie", "c_loop_stripped", "c_loop_endbr"])
    func cLoopPrintsA(name: String) throws {
        let victim = try Victim.launch(name)
        #expect(victim.readLines(3) == ["a=1", "a=1", "a=1"])
        #expect(victim.isAlive)
        victim.kill()
        #expect(!victim.isAlive)
        #expect(victim.exitStatus.flatMap(WaitStatus.signal) == SIGKILL)
    }

    @Test func cLoopSymbolsAndBuildKinds() throws {
        for name in ["c_loop", "c_loop_nopie", "c_loop_endbr"] {
            let syms = try symbols(try Victims.path(name))
            for fn in ["value_a", "value_b", "value_c", "add"] {
                let s = try #require(syms[fn], "\(name): no \(fn) in .symtab")
                #expect(s.type == "T", "\(name) \(fn) is not a global text symbol")
                #expect(s.size >= 32, "\(name) \(fn) is only \(s.size) bytes")
            }
        }
        // PIE vs fixed addresses.
        let pie = try runCommand("readelf", ["-h", try Victims.path("c_loop")])
        #expect(pie.stdout.contains("DYN"))
        let fixed = try runCommand("readelf", ["-h", try Victims.path("c_loop_nopie")])
        #expect(fixed.stdout.contains("EXEC"))
        #expect(try symbols(try Victims.path("c_loop_nopie"))["value_a"].map { $0.address >= 0x400000 } == true)
        // Stripped: no .symtab, the functions are in .dynsym with sizes.
        let stripped = try Victims.path("c_loop_stripped")
        #expect(try symbols(stripped).isEmpty)
        let dyn = try symbols(stripped, dynamic: true)
        for fn in ["value_a", "value_b", "value_c", "add"] {
            #expect((dyn[fn]?.size ?? 0) >= 32, "c_loop_stripped: \(fn) missing from .dynsym")
        }
        // The plain build starts with the classic frame head, no endbr64.
        #expect(try headBytes(try Victims.path("c_loop"), "value_a", 4) == [0x55, 0x48, 0x89, 0xe5])
    }

    @Test func cLoopEndbrFunctionsStartWithEndbr64() throws {
        let path = try Victims.path("c_loop_endbr")
        for fn in ["value_a", "value_b", "value_c", "add", "main"] {
            #expect(try headBytes(path, fn, 4) == [0xf3, 0x0f, 0x1e, 0xfa], "\(fn) does not start with endbr64")
        }
        for fn in ["value_a", "value_b", "value_c"] {
            #expect(try headBytes(try Victims.path("c_loop"), fn, 4) != [0xf3, 0x0f, 0x1e, 0xfa])
        }
    }

    @Test func threadsHotCountersIncrease() throws {
        let victim = try Victim.launch("threads_hot")
        #expect(victim.threadIDs.count == 9)
        let first = numbers(victim.waitForLine { $0.hasPrefix("counters ") })
        #expect(victim.readLine() == "values 1 1 1 1 1 1 1 1")
        // Every counter moves: waited for over several reports, since under a heavy load a thread
        // can miss a whole report period (a stuck one times this out and fails below).
        var second = numbers(victim.waitForLine { $0.hasPrefix("counters ") })
        try? waitUntil("every threads_hot counter to move") {
            if zip(first, second).allSatisfy({ $0 < $1 }) { return true }
            if let line = victim.waitForLine(timeout: 1, where: { $0.hasPrefix("counters ") }) { second = numbers(line) }
            return false
        }
        #expect(first.count == 8 && second.count == 8)
        #expect(first.allSatisfy { $0 > 0 })
        #expect(zip(first, second).allSatisfy { $0 < $1 }, "\(first) -> \(second)")
        let syms = try symbols(victim.path)
        #expect((syms["hot"]?.size ?? 0) >= 32)
        #expect((syms["hot_alt"]?.size ?? 0) >= 32)

        let three = try Victim.launch("threads_hot", arguments: ["3"])
        #expect(numbers(three.waitForLine { $0.hasPrefix("counters ") }).count == 3)
        #expect(three.readLine() == "values 1 1 1")
    }

    @Test func tinyFunctions() throws {
        let victim = try Victim.launch("tiny_funcs")
        #expect(victim.readLine() == "tiny 0 7 5")
        let syms = try symbols(victim.path)
        #expect(syms["tiny_ret"]?.size == 1)
        #expect(syms["tiny_xor"]?.size == 3)
        #expect(syms["tiny_four"]?.size == 4)
        #expect(syms["tiny_six"]?.size == 6)
        #expect(try headBytes(victim.path, "tiny_four", 4) == [0x6a, 0x07, 0x58, 0xc3])
        #expect(try headBytes(victim.path, "tiny_six", 6) == [0xb8, 0x05, 0x00, 0x00, 0x00, 0xc3])
    }

    @Test func branchBackIntoHead() throws {
        let victim = try Victim.launch("branch_back")
        #expect(victim.readLine() == "value 55")
        #expect((try symbols(victim.path)["loop_into_head"]?.size ?? 0) >= 32)
        let code = try disassemble(victim.path, "loop_into_head")
        #expect(code.contains { $0.text.hasPrefix("jg") && $0.text.contains("<loop_into_head+0x2>") },
                "no backward jump to loop_into_head+2")
    }

    @Test func ripRelativeFirstInstruction() throws {
        let victim = try Victim.launch("rip_relative")
        #expect(victim.readLine() == "rip 42")
        let code = try disassemble(victim.path, "rip_first")
        #expect(code.first.map { $0.bytes.starts(with: [0x8b, 0x05]) && $0.text.contains("(%rip)") } == true)
        #expect((try symbols(victim.path)["rip_first"]?.size ?? 0) >= 16)
        #expect(try symbols(victim.path)["counter"] != nil)
    }

    @Test func callInHeadThreadSleepsInsideCallee() throws {
        let victim = try Victim.launch("call_in_head", arguments: ["2"])
        #expect(victim.threadIDs.count == 2)
        #expect(try headBytes(victim.path, "call_head", 2) == [0xff, 0xd7])
        #expect((try symbols(victim.path)["call_head"]?.size ?? 0) >= 16)
        #expect(victim.readLine(timeout: 6) == "returned 107")
        #expect(victim.readLine() == "value 101")
    }

    @Test func blockingReadEchoesStdin() throws {
        let victim = try Victim.launch("blocking_read", arguments: ["1"], stdin: true)
        victim.writeStdin("hello\n")
        #expect(victim.waitForLine { $0.hasPrefix("read ") } == "read 6 errno 0 hello")
        #expect(victim.waitForLine { $0.hasPrefix("slept ") } == "slept rc 0 errno 0")
        victim.writeStdin("two words\n")
        #expect(victim.waitForLine { $0.hasPrefix("read ") } == "read 10 errno 0 two words")
        victim.closeStdin()
        #expect(victim.waitForLine { $0.hasPrefix("read ") } == "read 0 errno 0")
        #expect(victim.waitForLine("eof"))
        #expect(victim.waitExit().flatMap(WaitStatus.exitCode) == 0)
    }

    @Test func goLoopPrintsA() throws {
        let victim = try Victim.launch("go_loop")
        #expect(victim.readLines(2) == ["a=1", "a=1"])
        let syms = try symbols(victim.path)
        #expect((syms["main.a"]?.size ?? 0) > 0, "main.a missing or sizeless in nm")
        #expect((syms["main.b"]?.size ?? 0) > 0, "main.b missing or sizeless in nm")
    }

    @Test(arguments: ["c_loop", "threads_hot", "go_loop"])
    func sigtermKills(name: String) throws {
        let victim = try Victim.launch(name)
        // posix_spawn hygiene: nothing blocked, nothing ignored (SIGTERM is blocked in the test process).
        #expect(victim.procStatus("SigBlk") == "0000000000000000")
        #expect(victim.procStatus("SigIgn") == "0000000000000000")
        victim.signal(SIGTERM)
        let status = try #require(victim.waitExit(), "\(name) survived SIGTERM")
        #expect(WaitStatus.signal(status) == SIGTERM, "\(WaitStatus.describe(status))")
        #expect(!victim.isAlive)
    }

    @Test func victimsExitAfterTheirLifetime() throws {
        let c = try Victim.launch("c_loop", arguments: ["10", "1"])
        let go = try Victim.launch("go_loop", arguments: ["10", "1"])
        let blocked = try Victim.launch("blocking_read", arguments: ["10", "1"], stdin: true)
        #expect(c.waitExit(timeout: 5).flatMap(WaitStatus.signal) == SIGALRM)
        #expect(go.waitExit(timeout: 5).flatMap(WaitStatus.exitCode) == 0)
        #expect(blocked.waitExit(timeout: 5).flatMap(WaitStatus.signal) == SIGALRM)
    }

    @Test func killIsIdempotentAndLaunchFailuresThrow() throws {
        let victim = try Victim.launch("c_loop")
        victim.kill()
        victim.kill()
        #expect(WaitStatus.signal(try #require(victim.exitStatus)) == SIGKILL)
        #expect(victim.waitExit() == victim.exitStatus)
        #expect(throws: TestSupportError.self) { _ = try Victim.launch("/bin/echo", arguments: ["not ready"]) }
        #expect(throws: TestSupportError.self) { _ = try Victim.launch("no_such_victim") }
        // launchCommand: any program; lines before `ready` are skipped.
        let shell = try Victim.launchCommand("sh", arguments: ["-c", "echo before; echo ready; echo after; sleep 20"])
        #expect(shell.transcript == ["before", "ready"])
        #expect(shell.readLine() == "after")
        shell.kill()
        #expect(shell.exitStatus.flatMap(WaitStatus.signal) == SIGKILL)
    }

    @Test func runCommandHygiene() throws {
        let cat = try runCommand("cat", [], input: "some input\n")
        #expect(cat.status == 0 && cat.stdout == "some input\n")
        #expect(try runCommand("sh", ["-c", "echo err >&2; exit 3"]) == (3, "", "err\n"))
        #expect(try runCommand("sh", ["-c", "kill -TERM $$"]).status == 128 + SIGTERM)
        let mask = try runCommand("sh", ["-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"])
        #expect(mask.stdout.contains("SigBlk:\t0000000000000000"), "\(mask.stdout)")
        #expect(mask.stdout.contains("SigIgn:\t0000000000000000"), "\(mask.stdout)")
        // No descriptor of ours leaks into children: only 0, 1, 2 (and ls's own directory fd).
        let fds = try runCommand("ls", ["/proc/self/fd"])
        let open = fds.stdout.split(separator: "\n").compactMap { Int($0) }
        #expect(open.filter { $0 > 3 }.isEmpty, "leaked descriptors: \(open)")
        let start = Double(time(nil))
        #expect(throws: TestSupportError.self) { _ = try runCommand("sleep", ["10"], timeout: 0.5) }
        #expect(Double(time(nil)) - start < 5)
    }
}
