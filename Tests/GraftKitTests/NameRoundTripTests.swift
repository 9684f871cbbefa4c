import Foundation
import Glibc
import GraftKit
import Testing
import TestSupport

/// Every name graft prints for code without a symbol is `module+0xOFF`, and resolves back.
@Suite struct NameRoundTripTests {
    /// c_loop's printf runs through libc's static functions (Debian's libc has no .symtab): the
    /// trace names each by its .eh_frame start, in the table and in folded stacks, and each name
    /// resolves to that start; each step's location resolves to its pc.
    @Test func traceNamesOfStrippedCodeResolveBack() throws {
        let victim = try Victim.launch("c_loop", arguments: ["1"])
        defer { victim.kill() }
        let run = TraceRun(TraceSession(pid: victim.pid, options: TraceOptions(steps: 30_000), journal: temporaryJournal()))
        let summary = try run.waitEnd()
        let index = try SymbolIndex(pid: victim.pid)
        let unnamed = summary.profile.functionStats().map(\.function).filter { $0.name == nil && $0.module != nil }
        #expect(!unnamed.isEmpty, "printf runs libc code without a symbol")
        for function in unnamed {
            #expect(function.displayName.hasPrefix("\(function.module ?? "")+0x"), "\(function.displayName)")
            #expect(function.foldedName == function.displayName)
            #expect(try index.resolve(Location.parse(function.displayName)).address == function.start, "\(function.displayName)")
        }
        #expect(!summary.profile.functionStats().contains { $0.function.displayName.contains("??") })
        for step in run.steps.filter({ $0.function.name == nil && $0.function.module != nil }).prefix(200) {
            #expect(try index.resolve(Location.parse(step.location)).address == step.pc, "\(step.location)")
        }
        #expect(victim.isAlive)
    }

    /// A function of a stripped library, named as graft prints it (`libc.so.6+0xOFF`, the start of
    /// its .eh_frame range), takes a hook: armed there, named that way, the code restored after.
    @Test func strippedFunctionTakesAHook() throws {
        let victim = try Victim.launch("c_loop", arguments: ["1"])
        defer { victim.kill() }
        let index = try SymbolIndex(pid: victim.pid)
        let libc = try #require(index.modules.first { $0.name == "libc.so.6" })
        let elf = try libc.elf()
        let range = try #require(elf.unwindFunctions.first { elf.symbol(containing: $0.start) == nil && elf.pltSymbol(containing: $0.start) == nil && $0.size > 32 })
        let name = "libc.so.6+\(hexString(libc.loadBias &+ range.start &- libc.start))"
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: name)], limits: HookLimits(duration: 0.3), journal: temporaryJournal()))
        let summary = try run.waitEnd()
        let armed = run.events.compactMap { if case .armed(let hooks) = $0 { return hooks.first } else { return nil } }.first
        #expect(armed?.function == name && armed?.address == libc.loadBias &+ range.start, "\(String(describing: armed))")
        #expect(summary.codeRestored && victim.isAlive)
    }
}

private func hexString(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
