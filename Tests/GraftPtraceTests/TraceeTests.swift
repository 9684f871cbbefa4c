import Glibc
import CGraftShim
import GraftELF
import GraftCore
import GraftPtrace
import Testing
import TestSupport

/// The scheduler state letter of every thread of `pid` ("R", "S", "t" for ptrace-stopped, "T" stopped).
func threadStates(_ pid: Int32) -> [Int32: String] {
    var states: [Int32: String] = [:]
    for tid in ProcFS.threads(pid) {
        guard let text = ProcFS.readFile("/proc/\(pid)/task/\(tid)/stat"), let close = text.lastIndex(of: ")") else { continue }
        let rest = text[text.index(close, offsetBy: 2)...]
        states[tid] = String(rest.prefix(1))
    }
    return states
}

@Suite struct TraceeTests {
    @Test func attachStopsEveryThreadAndDetachLetsThemRun() throws {
        let victim = try Victim.launch("threads_hot", arguments: ["8"])
        defer { victim.kill() }
        let tracee = try Tracee.attach(pid: victim.pid)
        #expect(tracee.threadIDs.count == 9, "main + 8 workers")
        #expect(Set(tracee.threadIDs) == Set(ProcFS.threads(victim.pid)))
        #expect(threadStates(victim.pid).values.allSatisfy { $0 == "t" }, "\(threadStates(victim.pid))")
        try tracee.detach()
        try waitUntil("every thread out of its ptrace stop (\(threadStates(victim.pid)))") { !threadStates(victim.pid).values.contains("t") }
        victim.drain()
        #expect(victim.waitForLine(timeout: 2, where: { $0.hasPrefix("counters ") }) != nil)
    }

    @Test func aStoppedProcessStaysStoppedAfterDetach() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        victim.signal(SIGSTOP)
        try waitUntil("c_loop to stop (SIGSTOP)") { threadStates(victim.pid)[victim.pid] == "T" }
        let tracee = try Tracee.attach(pid: victim.pid)
        try tracee.detach()
        // A time to observe, not to wait for: a process wrongly woken would be running by now.
        usleep(20_000)
        #expect(threadStates(victim.pid)[victim.pid] == "T", "graft must not wake a stopped process")
        victim.signal(SIGCONT)
        victim.drain()
        #expect(victim.waitForLine(timeout: 2, where: { $0 == "a=1" }) != nil)
    }

    @Test func memoryReadAndCodeWriteRoundTrip() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        let tracee = try Tracee.attach(pid: victim.pid)
        defer { try? tracee.detach() }
        let text = try #require(try ProcMaps.read(pid: victim.pid).first(where: { $0.executable && $0.path.hasSuffix("/c_loop") }))
        // An unaligned write spanning two words, then put back.
        let address = text.start + 0x105
        let original = try tracee.readMemory(at: address, count: 11)
        let scribble: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        try tracee.writeText(at: address, bytes: scribble)
        #expect(try tracee.readMemory(at: address, count: 11) == scribble)
        #expect(try tracee.readMemory(at: address - 1, count: 1) == (try ProcessMemory.read(pid: victim.pid, at: address - 1, count: 1)))
        try tracee.writeText(at: address, bytes: original)
        #expect(try tracee.readMemory(at: address, count: 11) == original)
        expectNoThrowUnmapped(tracee)
    }

    func expectNoThrowUnmapped(_ tracee: Tracee) {
        do {
            _ = try tracee.readMemory(at: 0x10, count: 8)
            Issue.record("reading address 0x10 should fail")
        } catch let error as GraftError {
            #expect(error == .addressNotMapped(address: 0x10))
        } catch {
            Issue.record("\(error)")
        }
    }

    /// A remote mmap/munmap/mprotect while threads sit in blocking read() and nanosleep(): neither
    /// call may see EINTR or restart at the wrong pc.
    @Test func remoteSyscallsLeaveBlockedSyscallsIntact() throws {
        let victim = try Victim.launch("blocking_read", arguments: ["1"], stdin: true)
        defer { victim.kill() }
        // Both threads inside their system calls: read (0) and clock_nanosleep (230; nanosleep 35).
        let napper = try #require(victim.threadIDs.first { $0 != victim.pid }, "no second thread")
        try waitUntil("both threads to block (\(blockedSyscall(pid: victim.pid, tid: victim.pid) ?? -1), \(blockedSyscall(pid: victim.pid, tid: napper) ?? -1))") {
            blockedSyscall(pid: victim.pid, tid: victim.pid) == 0 && [35, 230].contains(blockedSyscall(pid: victim.pid, tid: napper) ?? -1)
        }
        let tracee = try Tracee.attach(pid: victim.pid)
        let page = try tracee.remoteMmap(length: 4096, protection: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS)
        #expect(page != 0 && page & 0xfff == 0)
        let maps = try ProcMaps.read(pid: victim.pid)
        #expect(maps.contains(where: { $0.start == page && $0.readable && $0.writable }))
        try tracee.writeText(at: page, bytes: [0xde, 0xad, 0xbe, 0xef])
        #expect(try tracee.readMemory(at: page, count: 4) == [0xde, 0xad, 0xbe, 0xef])
        try tracee.remoteMprotect(address: page, length: 4096, protection: PROT_READ | PROT_EXEC)
        #expect(try ProcMaps.read(pid: victim.pid).contains(where: { $0.start == page && $0.executable && !$0.writable }))
        try tracee.remoteMunmap(address: page, length: 4096)
        #expect(!(try ProcMaps.read(pid: victim.pid)).contains(where: { $0.start == page }))
        // A failing call reports its errno by name, and leaves the thread intact.
        do {
            try tracee.remoteMunmap(address: 1, length: 4096)
            Issue.record("munmap of an unaligned address should fail")
        } catch let error as GraftError {
            #expect(error == .remoteSyscallFailed(name: "munmap", errno: EINVAL))
        }
        try tracee.detach()

        victim.writeStdin("hello\n")
        let read = victim.waitForLine(timeout: 3, where: { $0.hasPrefix("read ") })
        #expect(read == "read 6 errno 0 hello")
        let slept = victim.waitForLine(timeout: 3, where: { $0.hasPrefix("slept ") })
        #expect(slept == "slept rc 0 errno 0", "nanosleep must restart, not fail with EINTR")
    }

    @Test func tracerThreadRunsInlineWhenAlreadyOnIt() throws {
        let tracer = TracerThread()
        defer { tracer.shutdown() }
        let outer = try tracer.run { graftCurrentTID() }
        let nested = try tracer.run { try tracer.run { graftCurrentTID() } }
        #expect(outer == nested)
        #expect(outer == tracer.kernelThreadID)
        #expect(outer != graftCurrentTID())
    }
}

func graftCurrentTID() -> Int32 { graft_gettid() }
