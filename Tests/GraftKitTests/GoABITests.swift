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

    /// `libc:strlen` is an IFUNC on Debian: graft hooks the implementation this process uses (the
    /// loader's answer in libc's IRELATIVE slot), which printf's %s calls.
    @Test func anIFUNCIsHookedWhereTheProcessCallsGo() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        var armed: [ArmedHook] = []
        let summary = try HookSession(pid: victim.pid, specs: [HookSpec(location: "libc:strlen")], limits: HookLimits(count: 3),
                                      journal: temporaryJournal())
            .run(onEvent: { event in if case .armed(let hooks) = event { armed = hooks } })
        #expect(summary.hooks.first?.hits == 3)
        #expect(armed.first?.function.contains("strlen") == true && armed.first?.function.contains("libc.so.6!strlen") == true)
        let graft = Graft(journal: temporaryJournal())
        let plan = try graft.preparePatch(pid: victim.pid, location: "libc:strlen", action: .returnValue(3))
        #expect(plan.checks.first?.contains("libc.so.6!strlen is an IFUNC: graft patches the implementation") == true)
    }
}
