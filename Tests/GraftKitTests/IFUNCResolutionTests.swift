import Glibc
@testable import GraftKit
import Testing
import TestSupport

/// Where an IFUNC's implementation comes from when libc has no IRELATIVE slot for it (`wcsncmp`),
/// and the refusal when nothing tells it: c_loop never calls wcsncmp, so no module's GOT binds it.
@Suite struct IFUNCResolutionTests {
    func resolver(_ pid: Int32, call: IFUNCResolverCall?) throws -> CodeSiteResolver {
        CodeSiteResolver(index: try SymbolIndex(pid: pid), disassembler: try Disassembler(.x86_64),
                         readMemory: { try ProcessMemory.read(pid: pid, at: $0, count: $1) }, callResolver: call)
    }

    func refusal(_ pid: Int32, call: IFUNCResolverCall?) throws -> String? {
        do {
            _ = try resolver(pid, call: call).locate("libc:wcsncmp", use: "hooking")
            return nil
        } catch GraftError.ifuncUnresolved(let function, _, let reason, let errorPID) {
            #expect(function == "libc.so.6!wcsncmp" && errorPID == pid)
            return reason
        }
    }

    /// No bound slot and no thread to run the resolver on: refused by name, one line, with what to do.
    @Test func refusedWhenTheResolverCannotBeCalled() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        #expect(try refusal(victim.pid, call: nil) == "graft may not run code in the process here")
        let text = GraftError.ifuncUnresolved(function: "libc.so.6!wcsncmp", use: "hooking", reason: "it faulted", pid: victim.pid).description
        #expect(!text.contains("\n"))
        #expect(text.hasPrefix("libc.so.6!wcsncmp is an IFUNC that no loaded module has bound yet and graft could not call its resolver: it faulted; hook it once the program has called wcsncmp (its GOT slot then holds the loader's choice), or hook the implementation itself"), "\(text)")
        #expect(text.contains("graft symbols -p \(victim.pid) 'libc.so.6:*wcsncmp*'"), "\(text)")
    }

    /// A resolver's answer is used only when it is executable code of a loaded module.
    @Test func aResolversAnswerIsChecked() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        #expect(try refusal(victim.pid, call: { _, _, _ in 0x10 }) == "its resolver returned 0x10, which is not mapped")
        let stack = try #require(try SymbolIndex(pid: victim.pid).mappings.first { $0.path == "[stack]" })
        let reason = try refusal(victim.pid, call: { _, _, _ in stack.start })
        #expect(reason?.hasPrefix("its resolver returned \(hex(stack.start)), which is not executable code of a loaded module (rw") == true, "\(reason ?? "")")
        #expect(try refusal(victim.pid, call: { resolver, _, _ in resolver })?.hasSuffix(", the resolver itself") == true)
        let failing = try refusal(victim.pid, call: { _, _, _ in throw GraftError.usage("no thread") })
        #expect(failing == "no thread")
    }

    /// The resolver really called in the process (a thread borrowed, the others running), with
    /// AT_HWCAP: its answer is libc code, and the process runs on unharmed.
    @Test func theResolverIsCalledInTheProcess() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let located = try resolver(victim.pid, call: graft.callIFUNCResolver(pid: victim.pid)).locate("libc:wcsncmp", use: "hooking")
        #expect(located.ifunc == "libc.so.6!wcsncmp")
        #expect(located.ifuncSource == "no module has bound it yet: the answer of its resolver, called in the process")
        #expect(located.module.name == "libc.so.6")
        #expect(victim.waitForLine("a=1"), "\(victim.drain())")
        #expect(victim.isAlive)
    }
}
