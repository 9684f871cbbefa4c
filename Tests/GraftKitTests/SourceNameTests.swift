import Glibc
@testable import GraftKit
import GraftELF
import Testing
import TestSupport

/// C++ functions by their source names: demangled in listings, hooks and backtraces; LOCATIONs by
/// the full signature or, when unique, without parameters; overloads listed when ambiguous.
@Suite struct SourceNameTests {
    @Test func symbolsMatchAndPrintDemangledNames() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let found = try graft.symbols(pid: victim.pid, matching: "shapes::Circle::*")
        let names = Set(found.compactMap { $0.symbol?.displayName })
        #expect(names.contains("shapes::Circle::area() const"))
        #expect(names.contains("shapes::Circle::name() const"))
        #expect(found.allSatisfy { $0.description.hasPrefix("shapes!shapes::Circle::") })
        // A linkage name still works as a pattern.
        #expect(try graft.symbols(pid: victim.pid, matching: "_ZNK6shapes6Circle4areaEv").count == 1)
    }

    @Test func locationsBySourceName() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let index = try SymbolIndex(pid: victim.pid)
        let full = try index.resolve(try Location.parse("shapes::Circle::area() const"))
        #expect(full.symbol?.name == "_ZNK6shapes6Circle4areaEv")
        let short = try index.resolve(try Location.parse("shapes::Circle::area"))
        #expect(short.address == full.address)
        let qualified = try index.resolve(try Location.parse("shapes:shapes::twice(long)"))
        #expect(qualified.symbol?.name == "_ZN6shapes5twiceEl")
        do {
            _ = try index.resolve(try Location.parse("shapes::twice"))
            Issue.record("an overloaded name resolved")
        } catch GraftError.ambiguousSymbol(let name, let candidates) {
            #expect(name == "shapes::twice")
            #expect(candidates.contains { $0.contains("shapes::twice(long)") } && candidates.contains { $0.contains("shapes::twice(double)") })
        }
    }

    @Test func hookBySourceNameCountsExactlyAndBacktracesAreDemangled() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let session = HookSession(pid: victim.pid, specs: [HookSpec(location: "shapes::Circle::area() const", backtrace: true)],
                                  limits: HookLimits(count: 3), journal: temporaryJournal())
        var frames: [String] = []
        let summary = try session.run(onEvent: { event in
            if case .hit(let hit) = event, frames.isEmpty {
                frames = hit.backtrace.map { "\($0.module ?? "?")!\($0.function ?? "?")" }
            }
        })
        #expect(summary.hooks.first?.hits == 3)
        #expect(frames.first == "shapes!shapes::Circle::area() const")
        #expect(frames.dropFirst().first == "shapes!areaOf(shapes::Shape const*)")
    }

    /// Patterns: expanded to one hook per function (aliases once), the unhookable ones skipped with
    /// a notice, a limit on how many, a pattern with no match named with close names.
    @Test func hookPatternsExpandSkipAndLimit() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let specs = try graft.hookSpecs(pid: victim.pid, locations: ["shapes::*::area*", "shapes:main"], template: HookSpec(location: ""))
        #expect(specs.map(\.location) == ["shapes:shapes::Circle::area() const", "shapes:shapes::Square::area() const",
                                           "shapes:shapes::Prism::area() const", "shapes:shapes::Box<int>::area() const", "shapes:main"])
        #expect(specs.map(\.fromPattern) == [true, true, true, true, false])
        expectError({ "\($0)".contains("brings the hooks to") && "\($0)".contains("more than --max-hooks 10") }) {
            _ = try graft.hookSpecs(pid: victim.pid, locations: ["libc:*"], template: HookSpec(location: ""), maxHooks: 10)
        }
        expectError({ "\($0)".contains("no function matches 'shapes::Circle::aera*'") }) {
            _ = try graft.hookSpecs(pid: victim.pid, locations: ["shapes::Circle::aera*"], template: HookSpec(location: ""))
        }
        // Hooked: exact count. A function the pattern matched that cannot take a hook — one graft has
        // patched — is skipped, not fatal; libc's wcsncmp (an IFUNC shapes never calls) is hooked at
        // the implementation its resolver answers.
        _ = try graft.patch(pid: victim.pid, location: "shapes::Square::area() const", action: .returnValue(9))
        let all = try graft.hookSpecs(pid: victim.pid, locations: ["shapes::*::area*", "libc:wcsncmp*"], template: HookSpec(location: ""))
        var notices: [String] = []
        let summary = try HookSession(pid: victim.pid, specs: all, limits: HookLimits(count: 8), journal: graft.journal)
            .run(onEvent: { event in if case .notice(let text) = event { notices.append(text) } })
        #expect(summary.hooks.reduce(0) { $0 + $1.hits } == 8)
        #expect(notices.contains { $0.hasPrefix("skipped ") && $0.contains("shapes::Square::area() const") }, "\(notices)")
        #expect(notices.contains { $0.contains("wcsncmp is an IFUNC: hooking the implementation this process uses") }, "\(notices)")
        #expect(victim.isAlive)
    }

    /// What graft prints is a LOCATION: `module!function[+0xOFF]` and `module+0xOFF`.
    @Test func printedNamesRoundTrip() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let index = try SymbolIndex(pid: victim.pid)
        let area = try index.resolve(try Location.parse("shapes::Circle::area() const"))
        #expect(try index.resolve(try Location.parse(area.description)).address == area.address, "\(area.description)")
        let plus = try index.resolve(try Location.parse("libc.so.6!getpid+0x4"))
        #expect(plus.address == (try index.resolve(try Location.parse("libc:getpid"))).address + 4)
        let libc = try index.module(named: "libc")
        let raw = try index.resolve(try Location.parse("libc.so.6+0x1000"))
        #expect(raw.address == libc.start + 0x1000)
        // C++'s operator!= keeps its '!'.
        #expect(try Location.parse("operator!=").base == .symbol(module: nil, name: "operator!="))
        let specs = try Graft(journal: temporaryJournal()).hookSpecs(pid: victim.pid, locations: ["shapes!areaOf(shapes::Shape const*)"], template: HookSpec(location: ""))
        #expect(specs.map(\.fromPattern) == [false], "a signature with '*' that resolves is a LOCATION, not a pattern")
    }
}
