import Glibc
@testable import GraftKit
import GraftPtrace
import Testing
import TestSupport

/// `graft patch --got MODULE:SYMBOL`: one module's import slot redirected, the other module's calls
/// untouched; lazy (JUMP_SLOT, not bound yet) and -z now (GLOB_DAT, `call *GOT`) builds; the
/// replacement calls what the slot led to; revert writes back what was there.
@Suite struct GOTPatchTests {
    func word(_ pid: Int32, _ address: UInt64) throws -> UInt64 {
        try ProcessMemory.read(pid: pid, at: address, count: 8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    @Test(arguments: [("got_lazy", "R_X86_64_JUMP_SLOT"), ("got_now", "R_X86_64_GLOB_DAT")])
    func onlyOneModulesCallsAreRedirected(victimName: String, relocation: String) throws {
        let victim = try Victim.launch(victimName)
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasPrefix("lib ") })
        let library = try Victims.path("libgotfix.so")
        let outcomes = try graft.patchGOT(pid: victim.pid, slot: "\(victimName):write", to: "logged_write", library: library)
        let outcome = try #require(outcomes.first)
        #expect(outcomes.count == 1)
        #expect(outcome.plan.relocation == relocation)
        #expect(outcome.plan.bound)
        #expect(outcome.plan.original.description.hasPrefix("libc.so.6!write"))
        #expect(try word(victim.pid, outcome.plan.slot) == outcome.plan.target.address)
        let pointer = try #require(outcome.plan.originalPointer)
        #expect(try word(victim.pid, pointer) == outcome.plan.original.address, "graft_original_logged_write = libc's write")
        expectLine(victim, { $0.hasPrefix("[graft] main ") }, "the program's writes go through the replacement, which calls write")
        victim.drain()
        let lines = victim.readLines(20)
        #expect(lines.contains { $0.hasPrefix("lib ") }, "the library's own writes are untouched: \(lines)")
        #expect(!lines.contains { $0.hasPrefix("[graft] lib") })
        #expect(!lines.contains { $0.hasPrefix("main ") })

        let results = try graft.unpatch(pid: victim.pid, ids: nil)
        #expect(results.map(\.outcome) == [.reverted])
        #expect(try word(victim.pid, outcome.plan.slot) == outcome.plan.currentValue, "what was there is back")
        victim.drain()
        expectLine(victim, { $0.hasPrefix("main ") })
        #expect(victim.isAlive)
    }

    /// A lazily bound slot graft redirects before the program's first call: the replacement gets
    /// the definition the loader would have bound; after the revert the loader binds it as usual.
    @Test func aSlotNotBoundYetIsRedirectedAndBindsNormallyAfterTheRevert() throws {
        let victim = try Victim.launch("got_lazy")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let outcome = try #require(try graft.patchGOT(pid: victim.pid, slot: "got_lazy:getppid", to: "fake_getppid",
                                                      library: try Victims.path("libgotfix.so")).first)
        #expect(!outcome.plan.bound, "getppid is first called about a second after ready")
        #expect(outcome.plan.original.description.hasPrefix("libc.so.6!getppid"))
        let parent = getpid()
        expectLine(victim, timeout: 10, { $0 == "ppid \(parent + 1_000_000)" }, "the replacement, calling the real getppid")
        #expect(try graft.unpatch(pid: victim.pid, ids: nil).map(\.outcome) == [.reverted])
        // The PLT address is back, and the next call (every 10 ms) has the loader bind the slot.
        let now = try word(victim.pid, outcome.plan.slot)
        #expect(now == outcome.plan.currentValue || now == outcome.plan.original.address, "\(hex(now))")
        victim.drain()
        expectLine(victim, { $0 == "ppid \(parent)" }, "bound by the loader at the next call")
    }

    @Test func refusals() throws {
        let victim = try Victim.launch("got_lazy")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectError({ "\($0)".contains("got_lazy has no GOT slot for wirte: it does not import it (close imports: write") }) {
            _ = try graft.patchGOT(pid: victim.pid, slot: "got_lazy:wirte", to: "libc:getpid")
        }
        expectError({ "\($0)".contains("--got takes MODULE:SYMBOL") }) {
            _ = try graft.patchGOT(pid: victim.pid, slot: "write", to: "libc:getpid")
        }
        let dry = try graft.patchGOT(pid: victim.pid, slot: "got_lazy:write", to: "libc:getpid", dryRun: true)
        #expect(dry.first?.dryRun == true && dry.first?.record == nil)
        #expect(try graft.list(pid: victim.pid).isEmpty)
    }
}
