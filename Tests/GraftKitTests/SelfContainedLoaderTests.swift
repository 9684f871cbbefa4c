import Glibc
import GraftKit
import Testing
import TestSupport

/// `SelfContainedLoader` on live processes without a dynamic loader: static_loop (gcc -static) and
/// go_loop get libnostd.so mapped, relocated, protected (and initialized in C); its functions run
/// inside them; it is unmapped again; libraries it cannot load are refused with nothing mapped.
@Suite struct SelfContainedLoaderTests {
    func libnostd() throws -> ELFFile { try ELFFile(path: try Victims.path("libnostd.so")) }

    /// The maps lines overlapping `[start, end)`.
    func mappings(_ pid: Int32, _ start: UInt64, _ end: UInt64) throws -> [Mapping] {
        try ProcMaps.read(pid: pid).filter { $0.end > start && $0.start < end }
    }

    /// An `int` a function returned in eax (the upper half of rax is not part of the result).
    func int32(_ rax: UInt64) -> Int32 { Int32(truncatingIfNeeded: rax) }

    func readInt32(_ pid: Int32, at address: UInt64) throws -> Int32 {
        let bytes = try ProcessMemory.read(pid: pid, at: address, count: 4)
        return bytes.enumerated().reduce(Int32(0)) { $0 | Int32($1.element) << Int32($1.offset * 8) }
    }

    /// static_loop: the library is mapped with its segments' protections (maps says so), the
    /// constructor ran (its flag is 0x600d in memory), its functions called inside the process give
    /// what the relocations promise — the target's price_base by address (GLOB_DAT against the
    /// target), a RELATIVE pointer to a static table, R_X86_64_64 function pointers, PLT calls — and
    /// a jump patch sends the program's own price() to it (`price=110`). Then it is unmapped.
    @Test func aStaticProgramGetsTheLibraryAndRunsIt() throws {
        let victim = try Victim.launch("static_loop", arguments: ["10"])
        defer { victim.kill() }
        #expect(victim.waitForLine("price=130"))
        let elf = try libnostd()
        let resolve = SelfContainedLoader.targetResolver(index: try SymbolIndex(pid: victim.pid))
        let priceBase = try #require(resolve("price_base"))
        #expect(resolve("price") != nil && resolve("no_such_symbol_graft") == nil)

        var tracee = try Tracee.attach(pid: victim.pid)
        let library = try SelfContainedLoader.map(elf, into: tracee, resolve: resolve, runInitializers: true)
        try tracee.detach()
        #expect(library.initializers.count == 1)
        #expect(library.path == elf.path && library.buildID == elf.buildID)
        #expect(library.start % 4096 == 0 && library.base == library.start)

        // /proc/PID/maps: every page of the span with its segment's protection.
        for segment in library.segments {
            let lines = try mappings(victim.pid, segment.start, segment.start + segment.length)
            #expect(!lines.isEmpty && lines.allSatisfy { String($0.permissions.prefix(3)) == segment.permissions && $0.path.isEmpty },
                    "\(segment.permissions) at \(hex(segment.start)): \(lines)")
        }
        #expect(Set(library.segments.map(\.permissions)).isSuperset(of: ["r--", "r-x", "rw-"]))
        let address = { (name: String) throws -> UInt64 in try #require(library.address(of: name, in: elf), "\(name)") }
        let code = try address("nostd_price")
        #expect(library.segments.first { code >= $0.start && code < $0.start + $0.length }?.permissions == "r-x")
        let ops = try address("nostd_ops")
        #expect(library.segments.first { ops >= $0.start && ops < $0.start + $0.length }?.permissions == "r--", "RELRO")
        #expect(try readInt32(victim.pid, at: try address("nostd_loaded")) == 0x600d, "the constructor ran")

        tracee = try Tracee.attach(pid: victim.pid)
        #expect(try tracee.remoteCall(try address("nostd_base_address"), [], name: "nostd_base_address") == priceBase)
        #expect(int32(try tracee.remoteCall(try address("nostd_price"), [3], name: "nostd_price")) == 110)
        #expect(int32(try tracee.remoteCall(try address("nostd_discount"), [2], name: "nostd_discount")) == 10)
        #expect(int32(try tracee.remoteCall(try address("nostd_op"), [0, 5], name: "nostd_op")) == 11)
        #expect(int32(try tracee.remoteCall(try address("nostd_op"), [1, 5], name: "nostd_op")) == -5)
        #expect(int32(try tracee.remoteCall(try address("nostd_twice"), [5], name: "nostd_twice")) == 22)
        try tracee.detach()
        #expect(try readInt32(victim.pid, at: try address("nostd_calls")) == 1)
        _ = victim.drain()
        expectLine(victim, { $0 == "price=130" }, "the program goes on")

        // The program's own price() jumps to the library's nostd_price: 100 + 30 - 20.
        let graft = Graft(journal: temporaryJournal())
        _ = try graft.patch(pid: victim.pid, location: "price", action: .jump(to: hex(code)))
        expectLine(victim, { $0 == "price=110" }, "price() runs the library's nostd_price")
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        _ = victim.drain()
        expectLine(victim, { $0 == "price=130" })
        #expect(try readInt32(victim.pid, at: try address("nostd_calls")) > 1)

        tracee = try Tracee.attach(pid: victim.pid)
        try SelfContainedLoader.unmap(library, tracee: tracee)
        try tracee.detach()
        #expect(try mappings(victim.pid, library.start, library.end).isEmpty, "unmapped")
        // A second unmap finds nothing there and unmaps nothing.
        tracee = try Tracee.attach(pid: victim.pid)
        expectError({ $0 == .addressNotMapped(address: library.start) }) { try SelfContainedLoader.unmap(library, tracee: tracee) }
        try tracee.detach()
        _ = victim.drain()
        expectLine(victim, { $0 == "price=130" })
        #expect(victim.isAlive)
    }

    /// go_loop (Go, static, no libc): mapped without initializers; the weak price_base it lacks is
    /// 0, so nostd_price(3) is 30 - 20; the function-pointer and PLT paths work; unmapped again.
    @Test func aGoProgramGetsTheLibraryAndRunsIt() throws {
        let victim = try Victim.launch("go_loop", arguments: ["10"])
        defer { victim.kill() }
        #expect(victim.waitForLine("a=1"))
        let elf = try libnostd()
        let resolve = SelfContainedLoader.targetResolver(index: try SymbolIndex(pid: victim.pid))
        #expect(resolve("price_base") == nil && resolve("main.a") != nil)

        let tracee = try Tracee.attach(pid: victim.pid)
        let library = try SelfContainedLoader.map(elf, into: tracee, resolve: resolve, runInitializers: false)
        #expect(library.initializers.isEmpty)
        let address = { (name: String) throws -> UInt64 in try #require(library.address(of: name, in: elf), "\(name)") }
        #expect(try tracee.remoteCall(try address("nostd_base_address"), [], name: "nostd_base_address") == 0)
        #expect(int32(try tracee.remoteCall(try address("nostd_price"), [3], name: "nostd_price")) == 10)
        #expect(int32(try tracee.remoteCall(try address("nostd_op"), [1, 7], name: "nostd_op")) == -7)
        #expect(int32(try tracee.remoteCall(try address("nostd_twice"), [4], name: "nostd_twice")) == 18)
        try tracee.detach()
        #expect(try readInt32(victim.pid, at: try address("nostd_loaded")) == 0, "no initializers in Go")
        let code = try address("nostd_price")
        #expect(try mappings(victim.pid, code, code + 1).first.map { String($0.permissions.prefix(3)) } == "r-x")

        let again = try Tracee.attach(pid: victim.pid)
        try SelfContainedLoader.unmap(library, tracee: again)
        try again.detach()
        #expect(try mappings(victim.pid, library.start, library.end).isEmpty)
        _ = victim.drain()
        expectLine(victim, { $0 == "a=1" })
        #expect(victim.isAlive)
    }

    /// libneeds.so (DT_NEEDED libc.so.6) and libnostd_missing.so (a symbol nothing defines) are
    /// refused by name before anything is mapped: the process's maps are unchanged.
    @Test func refusedLibrariesMapNothing() throws {
        let victim = try Victim.launch("static_loop", arguments: ["10"])
        defer { victim.kill() }
        #expect(victim.waitForLine("price=130"))
        let resolve = SelfContainedLoader.targetResolver(index: try SymbolIndex(pid: victim.pid))
        let tracee = try Tracee.attach(pid: victim.pid)
        defer { try? tracee.detach() }
        let before = try ProcMaps.read(pid: victim.pid)
        let needs = try ELFFile(path: try Victims.path("libneeds.so"))
        expectError({ "\($0)".contains("\(needs.path): graft maps it itself (no dynamic loader), and it needs libc.so.6; build it with -nostdlib") }) {
            _ = try SelfContainedLoader.map(needs, into: tracee, resolve: resolve, runInitializers: true)
        }
        let missing = try ELFFile(path: try Victims.path("libnostd_missing.so"))
        expectError({ "\($0)".contains("it needs the symbol graft_no_such_symbol") && "\($0)".hasSuffix("nothing was written") }) {
            _ = try SelfContainedLoader.map(missing, into: tracee, resolve: resolve, runInitializers: true)
        }
        #expect(try ProcMaps.read(pid: victim.pid) == before)
    }

    /// A constructor that faults: the error names the initializer and the fault, the reservation is
    /// unmapped again (maps as before) and the program goes on.
    @Test func aFaultingInitializerLeavesNothingMapped() throws {
        let dir = try Sources.directory()
        defer { _ = try? runCommand("rm", ["-rf", dir]) }
        let path = try Sources.build(dir, "libboom.so", "boom.c", """
            int boom_ready;
            __attribute__((constructor)) static void boom(void) { *(volatile int *)8 = 1; boom_ready = 1; }
            """)
        let victim = try Victim.launch("static_loop", arguments: ["10"])
        defer { victim.kill() }
        #expect(victim.waitForLine("price=130"))
        let resolve = SelfContainedLoader.targetResolver(index: try SymbolIndex(pid: victim.pid))
        let tracee = try Tracee.attach(pid: victim.pid)
        let before = try ProcMaps.read(pid: victim.pid)
        expectError({ "\($0)".contains("libboom.so's initializer 1 at 0x") && "\($0)".contains("it faulted (SIGSEGV at 0x") }) {
            _ = try SelfContainedLoader.map(try ELFFile(path: path), into: tracee, resolve: resolve, runInitializers: true)
        }
        #expect(try ProcMaps.read(pid: victim.pid) == before)
        try tracee.detach()
        _ = victim.drain()
        expectLine(victim, { $0 == "price=130" })
        #expect(victim.isAlive)
    }
}
