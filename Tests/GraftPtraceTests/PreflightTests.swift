import Glibc
import GraftCore
import GraftPtrace
import Testing
import TestSupport

/// A kernel thread visible in this PID namespace (kthreadd is PID 2 on a host; a container sees none).
func visibleKernelThread() -> Int32? {
    if let status = ProcFS.status(2), status["VmSize"] == nil, status["Name"] == "kthreadd" { return 2 }
    guard let dir = opendir("/proc") else { return nil }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard let pid = Int32(name), let status = ProcFS.status(pid) else { continue }
        if status["Kthread"] == "1" && status["VmSize"] == nil { return pid }
    }
    return nil
}

func thrown(_ body: () throws -> Void) -> GraftError? {
    do { try body() } catch let error as GraftError { return error } catch { return nil }
    return nil
}

@Suite struct PreflightTests {
    static let kernelThread = visibleKernelThread()

    @Test(.enabled(if: kernelThread != nil, "no kernel thread is visible in this PID namespace"))
    func aKernelThreadIsRefusedBeforeItsEmptyMapsAreRead() throws {
        let pid = try #require(Self.kernelThread)
        let refusal = GraftError.permissionDenied(pid: pid, reason: "it is a kernel thread, which has no user-space code to patch")
        #expect(thrown { try ProcFS.preflightTarget(pid) } == refusal)
        // Reading symbols of a kernel thread finds nothing either: the same refusal.
        #expect(thrown { try ProcFS.preflightTarget(pid, allowSelf: true) } == refusal)
        #expect(thrown { try ProcFS.preflight(pid) } == refusal)
    }

    @Test func graftsOwnProcessIsRefusedUnlessOnlyRead() throws {
        let me = getpid()
        let refusal = GraftError.permissionDenied(pid: me, reason: "graft cannot trace its own process")
        #expect(thrown { try ProcFS.preflightTarget(me) } == refusal)
        #expect(thrown { try ProcFS.preflight(me) } == refusal)
        try ProcFS.preflightTarget(me, allowSelf: true)
    }

    @Test func aLiveVictimPassesAndAMissingOneIsNamed() throws {
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        try ProcFS.preflightTarget(victim.pid)
        #expect(thrown { try ProcFS.preflightTarget(999_999_999) } == .noSuchProcess(pid: 999_999_999))
        #expect(thrown { try ProcFS.preflightTarget(-1) } == .noSuchProcess(pid: -1))
    }
}
