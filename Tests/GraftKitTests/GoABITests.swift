import Glibc
@testable import GraftKit
import Testing
import TestSupport

/// Go functions take their arguments in Go's register ABI (rax, rbx, rcx, rdi, rsi, r8–r11), not
/// C's: `hook --args` on a Go function reads those (issue 14: it read rdi, rsi… before).
@Suite struct GoABITests {
    @Test func goArgumentsAreReadFromGosRegisters() throws {
        let victim = try Victim.launch("go_loop")
        defer { victim.kill() }
        var hits: [[UInt64]] = []
        var returned: [UInt64] = []
        let summary = try HookSession(pid: victim.pid, specs: [HookSpec(location: "main.add", argumentCount: 2, returns: true)],
                                      limits: HookLimits(count: 3), journal: temporaryJournal())
            .run(onEvent: { event in
                switch event {
                case .hit(let hit): hits.append(hit.arguments)
                case .returned(let ret): returned.append(ret.value)
                default: break
                }
            })
        #expect(summary.hooks.first?.hits == 3)
        #expect(hits.allSatisfy { $0 == [3, 4] }, "main.add(3, 4): \(hits)")
        #expect(returned.allSatisfy { $0 == 7 })
    }

    /// go_loop built with -ldflags=-s: no .symtab, the names come from .gopclntab — the same names
    /// at the same addresses as the unstripped build's, and Go's ABI applies.
    @Test func strippedGoBinaryNamesFromPclntab() throws {
        let stripped = try ELFFile(path: try Victims.path("go_loop_stripped"))
        let full = try ELFFile(path: try Victims.path("go_loop"))
        #expect(!stripped.hasSymtab && full.hasSymtab)
        #expect(stripped.isGoProgram)
        for name in ["main.a", "main.b", "main.add", "main.main", "runtime.main", "runtime.mallocgc"] {
            let mine = stripped.symbols(named: name).first?.value
            #expect(mine != nil && mine == full.symbols(named: name).first?.value, "\(name)")
        }
        // Every Go function the full build names, the stripped one names at the same address.
        let named = Set(full.functionSymbols.filter { $0.name.contains(".") }.map { "\($0.name)@\($0.value)" })
        let recovered = Set(stripped.functionSymbols.map { "\($0.name)@\($0.value)" })
        let missing = named.subtracting(recovered).filter { !$0.contains(".abi0@") }
        #expect(missing.count < named.count / 50, "\(missing.prefix(10))")

        let victim = try Victim.launch("go_loop_stripped")
        defer { victim.kill() }
        var hits: [[UInt64]] = []
        var frames: [String] = []
        let summary = try HookSession(pid: victim.pid, specs: [HookSpec(location: "main.add", argumentCount: 2, backtrace: true)],
                                      limits: HookLimits(count: 2), journal: temporaryJournal())
            .run(onEvent: { event in
                if case .hit(let hit) = event { hits.append(hit.arguments); frames = hit.backtrace.map(\.description) }
            })
        #expect(summary.hooks.first?.hits == 2)
        #expect(hits.allSatisfy { $0 == [3, 4] }, "\(hits)")
        #expect(frames.first == "go_loop_stripped!main.add" && frames.contains { $0.hasPrefix("go_loop_stripped!main.main+0x") }, "\(frames)")
    }

    /// `libc:strlen` is an IFUNC on Debian: graft hooks the implementation this process uses (the
    /// loader's answer in libc's IRELATIVE slot), which printf's %s calls.
    @Test func anIFUNCIsHookedWhereTheProcessCallsGo() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        var armed: [ArmedHook] = []
        var notices: [String] = []
        let summary = try HookSession(pid: victim.pid, specs: [HookSpec(location: "libc:strlen")], limits: HookLimits(count: 3),
                                      journal: temporaryJournal())
            .run(onEvent: { event in
                if case .armed(let hooks) = event { armed = hooks }
                if case .notice(let text) = event { notices.append(text) }
            })
        #expect(summary.hooks.first?.hits == 3)
        // Debian's libc is stripped: the implementation has no name, and is spelled libc.so.6+0xOFF.
        let function = try #require(armed.first?.function)
        #expect(function.hasPrefix("libc.so.6+0x"), "\(function)")
        #expect(notices.contains("libc.so.6!strlen is an IFUNC: hooking the implementation this process uses, \(function) (the loader's choice, read from libc.so.6's IRELATIVE slot)"), "\(notices)")
        let graft = Graft(journal: temporaryJournal())
        let plan = try graft.preparePatch(pid: victim.pid, location: "libc:strlen", action: .returnValue(3))
        #expect(plan.checks.first?.contains("libc.so.6!strlen is an IFUNC: graft patches the implementation") == true)
    }
}

/// Go's assembly functions keep ABI0: every argument on the stack (`.symtab` names them `….abi0`).
@Suite struct GoABI0Tests {
    @Test func assemblyFunctionsTakeTheirArgumentsFromTheStack() throws {
        let victim = try Victim.launch("go_loop")
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "internal/bytealg.IndexByteString.abi0", argumentCount: 3)],
                                      limits: HookLimits(count: 2), journal: temporaryJournal()))
        _ = try run.waitEnd(timeout: 30)
        #expect(run.hits.count == 2)
        for hit in run.hits {
            // strings.IndexByte("hello", 'l'): the string's data pointer, its length 5, then the byte.
            #expect(hit.arguments.count == 3 && hit.arguments[1] == 5 && hit.arguments[2] & 0xff == UInt64(UInt8(ascii: "l")), "\(hit.arguments)")
        }
    }
}

/// A goroutine blocked inside a hooked call resumes on whichever thread the scheduler picks: its
/// return belongs to the goroutine (Go's g, in r14), not to the thread it was called on.
@Suite struct GoroutineReturnTests {
    @Test func everyCountedCallsReturnIsPairedThoughGoroutinesMoveBetweenThreads() throws {
        let victim = try Victim.launch("go_goroutines", arguments: ["8", "60"])
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "main.slow", argumentCount: 1, returns: true)],
                                      limits: HookLimits(count: 400), journal: temporaryJournal()))
        try #require(run.waitArmed(), "session did not arm")
        let summary = try run.waitEnd(timeout: 60)
        #expect(summary.end == .count)
        let hits = run.hits, returns = run.returns
        #expect(hits.count == 400)
        // Every counted call's return, each 2 × its argument (Go returns in rax too).
        #expect(returns.count == hits.count, "\(returns.count) returns for \(hits.count) calls")
        #expect(returns.map(\.value).sorted() == hits.map { 2 * $0.arguments[0] }.sorted())
        // And they did move: some returns came back on another thread than their call's.
        let callThreads = Dictionary(grouping: hits, by: { $0.arguments[0] }).mapValues { Set($0.map(\.tid)) }
        #expect(returns.contains { !(callThreads[$0.value / 2] ?? []).contains($0.tid) })
    }

    /// `--filter` pairs a return with its call by call number too: a goroutine's call is open on the
    /// thread it was called on, and another goroutine's call may have opened there since. With a
    /// `ret` condition every call is decided at its return, so each must meet its own.
    @Test func aFilterPairsEachGoroutinesReturnWithItsOwnCall() throws {
        let victim = try Victim.launch("go_goroutines", arguments: ["8", "60"])
        defer { victim.kill() }
        let session = HookSession(pid: victim.pid, specs: [HookSpec(location: "main.slow", argumentCount: 1, returns: true)],
                                  limits: HookLimits(count: 200), journal: temporaryJournal())
        session.filter = try HookFilter(parsing: "ret > 0")
        let run = HookRun(session)
        try #require(run.waitArmed(), "session did not arm")
        _ = try run.waitEnd(timeout: 60)
        let hits = run.hits, returns = run.returns
        #expect(hits.count == 200 && returns.count == hits.count, "\(returns.count) returns for \(hits.count) calls")
        let arguments = Dictionary(hits.map { ($0.call, $0.arguments[0]) }, uniquingKeysWith: { a, _ in a })
        let wrong = returns.filter { arguments[$0.call].map { 2 * $0 } != $0.value }
        #expect(wrong.count == 0, "\(wrong.count) of \(returns.count) returns not their call's (2 × its argument)")
    }

    /// `--count` with a filter and returns: once the count is reached, the counted calls' returns
    /// are waited for, and the other goroutines' calls (always some inside main.slow) are neither
    /// counted nor reported, decided at the call (`i > 0`) or at the return (`ret > 0`).
    @Test func aFilteredCountStopsCountingAtTheCount() throws {
        let victim = try Victim.launch("go_goroutines", arguments: ["8", "60"])
        defer { victim.kill() }
        for filter in ["i > 0", "ret > 0"] {
            let session = HookSession(pid: victim.pid, specs: [HookSpec(location: "main.slow", argumentCount: 1, returns: true)],
                                      limits: HookLimits(count: 20), journal: temporaryJournal())
            session.filter = try HookFilter(parsing: filter)
            let run = HookRun(session)
            try #require(run.waitArmed(), "session did not arm")
            let summary = try run.waitEnd(timeout: 60)
            #expect(run.hits.count == 20 && summary.totalHits == 20, "\(filter): \(run.hits.count) calls reported, \(summary.totalHits) counted")
            #expect(run.returns.count == 20, "\(filter): \(run.returns.count) returns")
        }
    }

    /// With --hardware a return address is in the calling thread's debug register only: a goroutine
    /// that resumes elsewhere returns unseen. Said at arming, and what is reported is still right.
    @Test func hardwareReturnsOfGoroutinesAreSaidToBePartial() throws {
        let victim = try Victim.launch("go_goroutines", arguments: ["8", "60"])
        defer { victim.kill() }
        let session = HookSession(pid: victim.pid, specs: [HookSpec(location: "main.slow", argumentCount: 1, returns: true)],
                                  limits: HookLimits(count: 200), journal: temporaryJournal())
        session.hardware = true
        let run = HookRun(session)
        try #require(run.waitArmed(), "session did not arm")
        _ = try run.waitEnd(timeout: 60)
        #expect(run.notices.contains { $0.contains("main.slow (after the stack check) is Go code: with --hardware, the return of a call whose goroutine blocks") })
        let hits = run.hits, returns = run.returns
        #expect(hits.count == 200 && returns.count <= hits.count)
        let arguments = Set(hits.map(\.arguments[0]))
        #expect(returns.allSatisfy { $0.value % 2 == 0 && arguments.contains($0.value / 2) })
    }

    /// A frame past StackBig has a longer stack check (`mov r12, rsp; sub r12, N; jb; cmp; jbe`): the
    /// hook goes after it too, or each call whose stack grows is counted twice (morestack runs the
    /// entry again).
    @Test func aLargeFrameCallIsCountedOnceThoughItsStackGrows() throws {
        let victim = try Victim.launch("go_goroutines", arguments: ["0", "60", "big"], stdin: true)
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "main.big", argumentCount: 1)], journal: temporaryJournal()))
        try #require(run.waitArmed(), "session did not arm")
        #expect(run.armedHooks.first?.function == "go_goroutines!main.big (after the stack check)")
        victim.writeStdin("go\n")
        #expect(victim.waitForLine(timeout: 30, where: { $0 == "big 4950" }) != nil, "\(victim.transcript)")
        let summary = try run.finish()
        #expect(summary.hooks[0].hits == 100)
        #expect(run.hits.map(\.arguments[0]).sorted() == (0..<100).map(UInt64.init))
    }
}
