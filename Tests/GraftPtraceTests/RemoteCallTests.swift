import GraftCore
import GraftELF
import Glibc
import Testing
import TestSupport
@testable import GraftPtrace

/// Tracee.remoteCall: a function run inside the target by a stopped thread, every register put back.
@Suite struct RemoteCallTests {
    /// The runtime address of `name` (`MODULE:NAME` works) in process `pid`.
    func address(_ name: String, in pid: Int32) throws -> UInt64 {
        try SymbolIndex(pid: pid).resolve(try Location.parse(name)).address
    }

    /// c_loop's `long add(long, long)` called with 40 and 2 returns 42; the thread's registers are
    /// as before (the program goes on printing a=1); libc's getpid returns the process id.
    @Test func aFunctionReturnsItsValueAndTheThreadGoesOn() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        #expect(victim.waitForLine("a=1"))
        let add = try address("add", in: victim.pid)
        let getpid = try address("libc:getpid", in: victim.pid)
        let tracee = try Tracee.attach(pid: victim.pid)
        let before = try tracee.registers(of: victim.pid)
        #expect(try tracee.remoteCall(add, [40, 2], name: "add") == 42)
        #expect(try tracee.remoteCall(add, [UInt64(bitPattern: -5), 3], name: "add") == UInt64(bitPattern: -2))
        #expect(try tracee.remoteCall(getpid, [], name: "getpid") == UInt64(victim.pid))
        let after = try tracee.registers(of: victim.pid)
        #expect(after.rip == before.rip && after.rsp == before.rsp && after.rax == before.rax && after.fsBase == before.fsBase
                && after.origRax == before.origRax && after.eflags == before.eflags, "registers not restored")
        try tracee.detach()
        _ = victim.drain()
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
        #expect(victim.isAlive)
    }

    /// A thread blocked in read(0) runs the call; its read then goes on as if nothing happened
    /// (orig_rax = -1 kept the kernel from rewinding the call's rip; no EINTR).
    @Test func aThreadBlockedInASystemCallMakesTheCallAndItsReadGoesOn() throws {
        let victim = try Victim.launch("blocking_read", arguments: ["1"], stdin: true)
        defer { victim.kill() }
        try waitUntil("the main thread to block in read") { blockedSyscall(pid: victim.pid, tid: victim.pid) == 0 }
        let getpid = try address("libc:getpid", in: victim.pid)
        let tracee = try Tracee.attach(pid: victim.pid)
        #expect(try tracee.remoteCall(getpid, [], name: "getpid", on: victim.pid) == UInt64(victim.pid))
        try tracee.detach()
        victim.writeStdin("hello\n")
        #expect(victim.waitForLine(timeout: 3, where: { $0.hasPrefix("read ") }) == "read 6 errno 0 hello")
    }

    /// A call that faults, and one that does not return in time: each is reported by name, the
    /// thread gets its registers back and the program goes on.
    @Test func aFaultAndATimeoutAreReportedAndTheProgramGoesOn() throws {
        let victim = try Victim.launch("c_loop", arguments: ["5"])
        defer { victim.kill() }
        #expect(victim.waitForLine("a=1"))
        let sleep = try address("libc:sleep", in: victim.pid)
        let tracee = try Tracee.attach(pid: victim.pid)
        do {
            _ = try tracee.remoteCall(0x10, [], name: "nothing")
            Issue.record("a call of 0x10 returned")
        } catch let error as GraftError {
            #expect("\(error)".contains("the call of nothing inside process \(victim.pid)") && "\(error)".contains("it faulted (SIGSEGV at 0x10)"), "\(error)")
        }
        do {
            _ = try tracee.remoteCall(sleep, [30], name: "sleep", timeout: 0.3)
            Issue.record("sleep(30) returned within 0.3 s")
        } catch let error as GraftError {
            #expect("\(error)".contains("it did not return within 0.3 s"), "\(error)")
        }
        try tracee.detach()
        _ = victim.drain()
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil)
        #expect(victim.isAlive)
    }
}
