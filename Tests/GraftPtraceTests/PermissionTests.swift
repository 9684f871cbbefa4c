import Glibc
import GraftPtrace
import Testing

/// The permission diagnosis as a decision over /proc facts: the cases this machine cannot produce for
/// real (it has no Yama) and the order of the checks. The real refusals are in PermissionCLITests.
@Suite struct PermissionTests {
    static let allCaps: UInt64 = 0x1ff_ffff_ffff
    static let ptrace: UInt64 = 1 << 19

    func facts(targetUID: UInt32 = 1000, targetGID: UInt32 = 1000, targetCaps: UInt64 = 0, memOwner: UInt32? = 1000,
               uid: UInt32 = 1000, gid: UInt32 = 1000, caps: UInt64 = 0, yama: Int? = nil, ancestor: Bool = false) -> ProcFS.PermissionFacts {
        ProcFS.PermissionFacts(targetUIDs: Array(repeating: targetUID, count: 4), targetGIDs: Array(repeating: targetGID, count: 4),
                               targetPermitted: targetCaps, targetMemOwner: memOwner, tracerUID: uid, tracerGID: gid,
                               tracerPermitted: caps, tracerEffective: caps, yamaScope: yama, tracerIsAncestor: ancestor)
    }

    @Test func yamaScopes() {
        #expect(ProcFS.explainPermission(facts(yama: 1)).hasPrefix("Yama ptrace_scope is 1 (only a parent may trace its descendants)"))
        #expect(ProcFS.explainPermission(facts(yama: 2)).hasPrefix("Yama ptrace_scope is 2 (admin only)"))
        #expect(ProcFS.explainPermission(facts(yama: 3)).hasPrefix("Yama ptrace_scope is 3"))
        // Scope 3 stops even root, and is said before anything else.
        #expect(ProcFS.explainPermission(facts(targetUID: 0, uid: 0, caps: Self.allCaps, yama: 3)).hasPrefix("Yama ptrace_scope is 3"))
        #expect(ProcFS.explainPermission(facts(targetUID: 0, yama: 3)).hasPrefix("Yama ptrace_scope is 3"))
        // Scope 1 lets an ancestor trace and CAP_SYS_PTRACE passes 1 and 2: then Yama is not the reason.
        #expect(!ProcFS.explainPermission(facts(yama: 1, ancestor: true)).contains("Yama"))
        #expect(!ProcFS.explainPermission(facts(caps: Self.ptrace, yama: 2)).contains("Yama"))
        #expect(ProcFS.explainPermission(facts(caps: Self.ptrace, yama: 2)).contains("although graft has CAP_SYS_PTRACE; check LSM policy"))
        // What was refused is named as it was: not every refusal is a PTRACE_SEIZE.
        #expect(ProcFS.explainPermission(facts(caps: Self.ptrace), refused: "opening /proc/1/maps")
            .hasPrefix("the kernel refused opening /proc/1/maps (EPERM) although graft has CAP_SYS_PTRACE"))
    }

    @Test func idsComeBeforeDumpabilityAndCapabilities() {
        let other = ProcFS.explainPermission(facts(targetUID: 0, targetCaps: Self.allCaps, memOwner: 0, yama: 1))
        #expect(other.hasPrefix("it belongs to uid 0 and graft runs as uid 1000 without CAP_SYS_PTRACE"))
        var setuid = facts()
        setuid.targetUIDs = [1000, 0, 0, 0]
        #expect(ProcFS.explainPermission(setuid).contains("its real, effective and saved uids differ: set-uid?"))
        #expect(ProcFS.explainPermission(facts(targetGID: 50)).hasPrefix("its group ids (50, 50, 50) differ from graft's gid 1000"))
        #expect(ProcFS.explainPermission(facts(memOwner: 0)).hasPrefix("the process is not dumpable"))
        #expect(ProcFS.explainPermission(facts(targetCaps: 0x3000, caps: 0x1000)).hasPrefix("it holds capabilities graft lacks (CapPrm 0x2000 missing)"))
        // CAP_SYS_PTRACE overrides every one of them.
        let root = ProcFS.explainPermission(facts(targetUID: 0, targetCaps: Self.allCaps, memOwner: 0, uid: 1000, caps: Self.ptrace))
        #expect(root.hasPrefix("the kernel refused PTRACE_SEIZE (EPERM) although graft has CAP_SYS_PTRACE"))
    }

    @Test func yamaFileIsRead() throws {
        // diagnosePermission reads the scope from the file it is given: a scope-3 file is reported
        // even for a process graft could otherwise trace (this test process itself).
        let path = "/tmp/graft-yama-\(getpid())"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = write(fd, "3\n", 2)
        close(fd)
        defer { unlink(path) }
        let error = ProcFS.diagnosePermission(getpid(), yamaScopePath: path)
        #expect(error.description.contains("Yama ptrace_scope is 3"), "\(error)")
    }
}
