import Foundation
import Glibc
import Testing
import TestSupport

/// IFUNCs libc itself never calls (Debian's `wcsncmp`: no IRELATIVE slot in libc.so.6) resolve to
/// the implementation the process uses: read from a module's bound GOT slot (`ifunc_now`, bound at
/// start), or, before any module has bound it (`ifunc_lazy`, -z lazy, before its first call), the
/// answer of the resolver graft calls in the process. Hooks count exactly, `--return` changes the
/// victim's output, `unpatch` restores the bytes.
@Suite struct IFUNCCLITests {
    /// `graft hook libc:wcsncmp -- VICTIM 100` with one `go`: the hits, the notice, the victim's lines.
    func hookLaunched(_ victim: String) throws -> (hits: Int?, notice: String, stdout: String) {
        let result = try runCommand(try graftBinary(), ["hook", "libc:wcsncmp", "--json", "--state-dir", temporaryDirectory(), "--",
                                                      try Victims.path(victim), "100"], input: "go\n")
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("wcsncmp 100 sum 0"), "\(lines)")
        let events = try jsonLines(lines.filter { $0.hasPrefix("{") }.joined(separator: "\n"))
        let notice = events.first { $0["event"] as? String == "notice" }?["message"] as? String ?? ""
        let summary = try #require(events.last)
        let hits = (summary["hooks"] as? [[String: Any]])?.first?["hits"] as? Int
        return (hits, notice, result.stdout)
    }

    @Test func hookedWhereTheProgramsGOTIsBound() throws {
        let result = try hookLaunched("ifunc_now")
        #expect(result.hits == 100, "\(result.stdout)")
        #expect(result.notice.hasPrefix("libc.so.6!wcsncmp is an IFUNC: hooking the implementation this process uses, libc.so.6"), "\(result.notice)")
        #expect(result.notice.contains("(the loader's choice, read from ifunc_now's GOT, its R_X86_64_JUMP_SLOT slot at 0x"), "\(result.notice)")
    }

    /// At the entry point of a lazily bound program nothing has bound wcsncmp: the resolver is called
    /// in the process, and its answer is what the loader binds at the first call (every call counted).
    @Test func hookedThroughTheResolverBeforeTheFirstCall() throws {
        let result = try hookLaunched("ifunc_lazy")
        #expect(result.hits == 100, "\(result.stdout)")
        #expect(result.notice.contains("(no module has bound it yet: the answer of its resolver, called in the process)"), "\(result.notice)")
    }

    /// `count` bytes at `address` in the process (empty when unreadable).
    func memory(_ pid: Int32, _ address: UInt64, _ count: Int) -> [UInt8] {
        let fd = open("/proc/\(pid)/mem", O_RDONLY)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(Int64(bitPattern: address))) }
        return n == count ? bytes : []
    }

    func hexBytes(_ text: String) -> [UInt8] {
        stride(from: 0, to: text.count, by: 2).compactMap { UInt8(String(text.dropFirst($0).prefix(2)), radix: 16) }
    }

    /// `patch --return 7` on libc:wcsncmp: the victim's sum goes from 0 to 7 per call and back after
    /// `unpatch`, with the original bytes in memory again. `source` is where the dry run and the
    /// patch say the implementation came from.
    func patchAndRestore(_ name: String, callFirst: Bool, source: String) throws {
        let victim = try Victim.launch(name, arguments: ["100"], stdin: true)
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        if callFirst {
            victim.writeStdin("go\n")
            #expect(victim.waitForLine("wcsncmp 100 sum 0"))
        }
        let dry = try graft(["patch", "-p", pid, "libc:wcsncmp", "--return", "7", "--dry-run"], stateDir: state)
        if source.contains("resolver") {
            // A dry run runs no code in the process: not bound yet, the answer is the resolver's.
            #expect(dry.status != 0 && dry.stderr.contains("no loaded module has bound yet") && dry.stderr.contains("--dry-run runs no code in the process"),
                    "\(dry.stderr)")
        } else {
            #expect(dry.status == 0, "\(dry.stderr)")
            #expect(dry.stdout.contains("libc.so.6!wcsncmp is an IFUNC: graft patches the implementation this process's calls reach, libc.so.6"), "\(dry.stdout)")
            #expect(dry.stdout.contains(source), "\(dry.stdout)")
        }
        let patched = try graft(["patch", "-p", pid, "libc:wcsncmp", "--return", "7", "--json"], stateDir: state)
        #expect(patched.status == 0, "\(patched.stderr)")
        let event = try #require(try jsonLines(patched.stdout).first)
        let address = try #require((event["address"] as? String).flatMap { UInt64($0.dropFirst(2), radix: 16) })
        let original = hexBytes(try #require(event["original_bytes"] as? String))
        #expect(memory(victim.pid, address, 6) == [0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3])
        #expect((event["checks"] as? [String])?.first?.contains(source) == true, "\(patched.stdout)")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine("wcsncmp 100 sum 700"), "\(victim.drain())")
        let unpatched = try graft(["unpatch", "-p", pid, "--all"], stateDir: state)
        #expect(unpatched.status == 0, "\(unpatched.stderr)")
        #expect(memory(victim.pid, address, original.count) == original)
        victim.writeStdin("go\n")
        #expect(victim.waitForLine("wcsncmp 100 sum 0"), "\(victim.drain())")
        #expect(victim.isAlive)
    }

    @Test func patchedWhereTheProgramsGOTIsBound() throws {
        try patchAndRestore("ifunc_now", callFirst: false, source: "(the loader's choice, read from ifunc_now's GOT, its R_X86_64_JUMP_SLOT slot at 0x")
    }

    /// Lazy binding: before the first call the resolver answers; after it the program's GOT does.
    @Test func patchedLazilyBoundBeforeAndAfterTheFirstCall() throws {
        try patchAndRestore("ifunc_lazy", callFirst: false, source: "(no module has bound it yet: the answer of its resolver, called in the process)")
        try patchAndRestore("ifunc_lazy", callFirst: true, source: "(the loader's choice, read from ifunc_lazy's GOT, its R_X86_64_JUMP_SLOT slot at 0x")
    }

    /// `symbols` lists the IFUNC's own symbol (the resolver) and marks it, so that a patch or hook
    /// landing elsewhere is no surprise.
    @Test func symbolsMarkTheIFUNC() throws {
        let victim = try Victim.launch("ifunc_lazy", arguments: ["100"], stdin: true)
        defer { victim.kill() }
        let state = temporaryDirectory()
        let json = try graft(["symbols", "-p", String(victim.pid), "libc:wcsncmp", "--json"], stateDir: state)
        #expect(json.status == 0, "\(json.stderr)")
        let symbol = try #require(try jsonLines(json.stdout).first)
        #expect(symbol["name"] as? String == "wcsncmp" && symbol["ifunc"] as? Bool == true, "\(json.stdout)")
        let text = try graft(["symbols", "-p", String(victim.pid), "libc:wcsncmp"], stateDir: state)
        #expect(text.stdout.contains("libc.so.6  wcsncmp (IFUNC)"), "\(text.stdout)")
        let plain = try graft(["symbols", "-p", String(victim.pid), "libc:getpid", "--json"], stateDir: state)
        #expect(try jsonLines(plain.stdout).first?["ifunc"] == nil, "\(plain.stdout)")
    }

    /// An IFUNC of a library of our own: its resolver is not glibc's, so graft never calls it (it
    /// might take a lock). Unbound, the IFUNC is refused saying so, and the victim is untouched;
    /// once the program's GOT slot is bound, that slot says the implementation: exact hits.
    @Test func anotherLibrarysResolverIsNeverCalled() throws {
        let victim = try Victim.launch("ifunc_own", arguments: ["50"], stdin: true)
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let refused = try graft(["hook", "-p", pid, "libownifunc:own_pick", "--count", "1"], stateDir: state)
        #expect(refused.status != 0 && refused.stderr.contains("libownifunc.so!own_pick is an IFUNC that no loaded module has bound yet")
                && refused.stderr.contains("graft calls only glibc's resolvers"), "\(refused.stderr)")
        #expect(refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine("own 50 sum 1275"), "\(victim.drain())")
        let session = try Victim.launchCommand(try graftBinary(), arguments: ["hook", "-p", pid, "libownifunc:own_pick", "--count", "50", "--json", "--quiet",
                                                                            "--state-dir", state], waitForReady: false)
        defer { session.kill() }
        #expect(session.waitForLine(timeout: 20, where: { $0.contains("\"event\":\"armed\"") }) != nil, "\(session.transcript)")
        #expect(session.waitForLine(timeout: 20, where: { $0.contains("own_pick is an IFUNC: hooking the implementation this process uses")
                                                          && $0.contains("ifunc_own's GOT") }) != nil, "\(session.transcript)")
        victim.writeStdin("go\n")
        #expect(session.waitExit(timeout: 20).flatMap(WaitStatus.exitCode) == 0, "\(session.stderrOutput)")
        _ = session.readLines(100, timeout: 5)
        #expect(session.transcript.contains { $0.contains("\"hits\":50") }, "\(session.transcript)")
        #expect(victim.waitForLine("own 50 sum 1275"), "\(victim.drain())")
    }
}
