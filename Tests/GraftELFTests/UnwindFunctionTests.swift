import Glibc
import GraftCore
import Testing
@testable import GraftELF

/// Code without a symbol: function ranges from `.eh_frame_hdr` + `.eh_frame`, one spelling
/// (`module+0xOFF`) that resolves back, and "did you mean" that says a module is stripped.
@Suite struct UnwindFunctionTests {
    /// Debian's libc is stripped: every FDE readelf lists is a range, sorted, and an exported
    /// function's range starts at its symbol.
    @Test func libcFunctionRangesMatchReadelf() throws {
        let elf = try ELFFile(path: libcPath)
        #expect(!elf.hasSymtab)
        let ranges = elf.unwindFunctions
        let fdes = run("readelf -wf \(libcPath) 2>/dev/null | grep -c 'FDE cie='").trimmingWhitespace
        #expect(String(ranges.count) == fdes, "\(ranges.count) ranges, readelf: \(fdes) FDEs")
        #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.start < $1.start })
        let getpid = try #require(elf.symbols(named: "getpid").first)
        #expect(elf.unwindFunction(containing: getpid.value)?.start == getpid.value)
        #expect(elf.unwindFunction(containing: getpid.value + 1)?.start == getpid.value)
        // A static function: `__libc_start_call_main` (readelf: the FDE holding the return address
        // __libc_start_main's backtraces show) has no symbol but a range.
        let inside = try #require(ranges.first { elf.symbol(containing: $0.start) == nil })
        #expect(elf.unwindFunction(containing: inside.start + inside.size - 1) == inside)
    }

    /// Every address of libc in this process, printed without a symbol, resolves back to itself.
    @Test func unnamedAddressesRoundTrip() throws {
        let index = try SymbolIndex(pid: getpid())
        let libc = try #require(index.modules.first { $0.name == "libc.so.6" })
        let elf = try libc.elf()
        var checked = 0
        for range in elf.unwindFunctions.prefix(400) where elf.symbol(containing: range.start) == nil && elf.pltSymbol(containing: range.start) == nil {
            let address = libc.loadBias &+ range.start &+ 1
            let resolved = try #require(index.symbolize(address))
            #expect(resolved.description == "libc.so.6+\(hex(address - libc.start))")
            #expect(resolved.unnamedFunctionName == "libc.so.6+\(hex(address - 1 - libc.start))")
            #expect(try index.resolve(Location.parse(resolved.description)).address == address)
            #expect(try index.resolve(Location.parse(resolved.unnamedFunctionName ?? "")).address == address - 1)
            checked += 1
        }
        #expect(checked > 10)
        // A PLT stub's name (`free@plt`, as traces name it) is a LOCATION too.
        let stub = try #require(elf.pltSymbols.first)
        #expect(try index.resolve(Location.parse("libc.so.6!\(stub.name)")).address == libc.loadBias &+ stub.value)
    }

    /// `main` inside another name only as its first or last word.
    @Test func suggestionsStayWordLike() {
        let names = ["textdomain", "getdomainname", "setdomainname", "bindtextdomain", "res_querydomain",
                     "__libc_start_main", "_IO_switch_to_main_wget_area", "main.main", "mainloop_run", "main_loop"]
        let close = Suggestions.best(for: "main", among: names)
        #expect(close == ["main.main", "main_loop", "__libc_start_main"], "\(close)")
        #expect(Suggestions.best(for: "getpdi", among: ["getpid", "getppid"]).first == "getpid")
    }

    /// A stripped module says so, and how to name its code.
    @Test func missingNameInAStrippedModule() throws {
        let index = try SymbolIndex(pid: getpid())
        let error = graftError { _ = try index.resolve(Location.parse("libc:GETPID")) }
        guard case .symbolNotFoundStripped("GETPID", "libc.so.6", let suggestions)? = error else {
            Issue.record("got \(String(describing: error))"); return
        }
        #expect(suggestions.first == "getpid")
        #expect(error?.description.contains("libc.so.6 is stripped (no .symtab: only its exported functions have names); name its code as libc.so.6+0xOFF") == true)
    }
}
