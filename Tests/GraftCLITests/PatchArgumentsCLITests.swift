import Foundation
import Testing
import TestSupport

/// `patch` arguments a user types in a hurry: negative and hex return values, a LOCATION inside the
/// function (after the prologue moved the stack), an offset past the function's end.
@Suite struct PatchArgumentsCLITests {
    @Test func negativeAndHexReturnValuesAsSeparateArguments() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        for (argument, line) in [("-1", "a=-1"), ("0x10", "a=16"), ("-0x2", "a=-2")] {
            let patch = try graft(["patch", "-p", pid, "value_a", "--return", argument], stateDir: state)
            #expect(patch.status == 0, "--return \(argument): \(patch.stderr)")
            #expect(victim.waitForLine(timeout: 5, where: { $0 == line }) != nil, "--return \(argument): no \(line)")
            #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
            #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
        }
        // Both spellings, the same stub: mov rax, simm32 (-1); an unsigned 64-bit hex is its bit pattern.
        for arguments in [["--return", "-1"], ["--return=-1"], ["--return", "0xffffffffffffffff"]] {
            let dry = try graft(["patch", "-p", pid, "value_a", "--dry-run"] + arguments, stateDir: state)
            #expect(dry.status == 0 && dry.stdout.contains("48 c7 c0 ff ff ff ff c3"), "\(arguments): \(dry.stdout) \(dry.stderr)")
        }
        for bad in ["12x", "-+5", "0x+5", "++5", "-", "0x", ""] {
            expectOneLineError(try graft(["patch", "-p", pid, "value_a", "--return", bad], stateDir: state), "--return")
        }
        expectOneLineError(try graft(["patch", "-p", pid, "value_a", "--return", "-0x8000000000000001"], stateDir: state), "-0x8000000000000001")
    }

    @Test func hookSetReturnTakesANegativeValueToo() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        let result = try graft(["hook", "-p", String(victim.pid), "value_a", "--set-return", "-4", "--skip", "--count", "3"],
                               stateDir: temporaryDirectory())
        #expect(result.status == 0, "\(result.stderr)")
        _ = victim.waitForLine(timeout: 0.5, where: { _ in false })  // collect the lines printed meanwhile
        #expect(victim.transcript.filter { $0 == "a=-4" }.count == 3, "\(victim.transcript.suffix(10))")
        #expect(victim.transcript.last == "a=1")
    }

    @Test func aLocationAfterTheStackMovedIsRefusedUnlessAsked() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        // value_a starts with `push rbp; mov rbp, rsp`: +1 is after the push.
        let before = try functionMemory(pid: victim.pid, "value_a")
        let stub = try graft(["patch", "-p", pid, "value_a+1", "--return", "1"], stateDir: state)
        expectOneLineError(stub, "'push rbp' at ")
        #expect(stub.stderr.contains("moves the stack pointer before that point, so the stub's ret would return to the wrong address"))
        #expect(stub.stderr.contains("--mid-function"))
        let jump = try graft(["patch", "-p", pid, "value_a+1", "--to", "value_b"], stateDir: state)
        expectOneLineError(jump, "the jump's target would return to the wrong address")
        #expect(try functionMemory(pid: victim.pid, "value_a") == before, "a refused patch writes nothing")
        #expect(victim.waitForLine(timeout: 2, where: { $0 == "a=1" }) != nil && victim.isAlive)
        // Asked for: the check is reported, not skipped silently.
        let forced = try graft(["patch", "-p", pid, "value_a+1", "--return", "1", "--mid-function", "--dry-run"], stateDir: state)
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stdout.contains("--mid-function: 'push rbp' at"), "\(forced.stdout)")
    }

    @Test func aLocationBeforeAnyStackChangeIsFine() throws {
        // c_loop_endbr's value_a: endbr64, then push rbp. +4 is after endbr64 only.
        let victim = try Victim.launch("c_loop_endbr")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let patch = try graft(["patch", "-p", String(victim.pid), "value_a+4", "--return", "7"], stateDir: state)
        #expect(patch.status == 0, "\(patch.stderr)")
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=7" }) != nil)
        let dry = try graft(["patch", "-p", String(victim.pid), "value_b+4", "--return", "7", "--dry-run"], stateDir: state)
        #expect(dry.stdout.contains("nothing in c_loop_endbr!value_b before"), "\(dry.stdout)")
        #expect(try graft(["unpatch", "-p", String(victim.pid), "--all"], stateDir: state).status == 0)
    }

    @Test func anOffsetPastTheEndNamesTheFunctionsSize() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let state = temporaryDirectory()
        let symbols = try graft(["symbols", "-p", String(victim.pid), "value_a", "--json"], stateDir: state)
        let size = try #require(try jsonLines(symbols.stdout).first?["size"] as? Int)
        for offset in [size, size + 1] {
            let result = try graft(["patch", "-p", String(victim.pid), "value_a+\(offset)", "--return", "1"], stateDir: state)
            expectOneLineError(result, "is past the end of c_loop!value_a, which is \(size) bytes long")
        }
    }
}

/// The bytes of `name` in the process's memory.
private func functionMemory(pid: Int32, _ name: String) throws -> [UInt8] {
    let symbols = try graft(["symbols", "-p", String(pid), name, "--json"], stateDir: temporaryDirectory())
    let bare = name.split(separator: ":").last.map(String.init) ?? name
    let entry = try #require(try jsonLines(symbols.stdout).first { $0["name"] as? String == bare })
    let address = try #require((entry["address"] as? String).flatMap { UInt64($0.dropFirst(2), radix: 16) })
    let size = try #require(entry["size"] as? Int)
    let fd = open("/proc/\(pid)/mem", O_RDONLY)
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: size)
    #expect(pread(fd, &bytes, size, off_t(address)) == size)
    return bytes
}

extension PatchArgumentsCLITests {
    /// value_a in c_loop and in a preloaded libdup.so: a bare NAME is refused with both spellings
    /// listed and nothing written; MODULE:NAME picks one.
    @Test func aNameInTwoModulesIsListedAndMODULEColonNAMEPicksOne() throws {
        let victim = try Victim.launch("c_loop", environment: ["LD_PRELOAD": try Victims.path("libdup.so")])
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let before = try functionMemory(pid: victim.pid, "c_loop:value_a")
        for arguments in [["patch", "-p", pid, "value_a", "--return", "1"], ["patch", "-p", pid, "c_loop:value_b", "--to", "value_a"],
                          ["hook", "-p", pid, "value_a", "--count", "1"]] {
            let result = try graft(arguments, stateDir: state)
            expectOneLineError(result, "'value_a' is defined in several modules")
            #expect(result.stderr.contains("c_loop:value_a") && result.stderr.contains("libdup.so:value_a"), "\(result.stderr)")
        }
        #expect(try functionMemory(pid: victim.pid, "c_loop:value_a") == before)
        let picked = try graft(["patch", "-p", pid, "c_loop:value_a", "--to", "libdup:value_a"], stateDir: state)
        #expect(picked.status == 0, "\(picked.stderr)")
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=9" }) != nil)
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: state).status == 0)
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
    }
}

extension PatchArgumentsCLITests {
    /// A patch recorded in another journal directory (root's /run/graft and a user's differ): the
    /// refusal says what is there and where to look, instead of blaming "another tool".
    @Test func aPatchFromAnotherJournalIsRecognised() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let pid = String(victim.pid)
        let first = temporaryDirectory(), second = temporaryDirectory()
        #expect(try graft(["patch", "-p", pid, "value_a", "--to", "value_b"], stateDir: first).status == 0)
        let jump = try graft(["patch", "-p", pid, "value_a", "--return", "3"], stateDir: second)
        expectOneLineError(jump, "a jump to c_loop!value_b is there, as graft writes")
        #expect(jump.stderr.contains("another journal directory (this one is \(second)"), "\(jump.stderr)")
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: first).status == 0)
        #expect(try graft(["patch", "-p", pid, "value_c", "--return", "4"], stateDir: first).status == 0)
        expectOneLineError(try graft(["patch", "-p", pid, "value_c", "--return", "5"], stateDir: second), "a return stub ('mov eax, 4; ret') is there")
        #expect(try graft(["unpatch", "-p", pid, "--all"], stateDir: first).status == 0)
    }
}
