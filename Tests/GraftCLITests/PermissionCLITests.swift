import Glibc
import Testing
import TestSupport

/// Permission refusals diagnosed for real: graft and victims run with fewer rights through
/// util-linux `setpriv`, and each refusal names its own cause in one line, leaving the victim as it was.
@Suite(.serialized) struct PermissionCLITests {
    static let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]

    /// `path` itself when user nobody can run it (every directory above it searchable by others),
    /// else a copy in a fresh world-readable directory (a CI clone may live under /root).
    func runnableByOthers(_ path: String) throws -> String {
        var dir = path
        var reachable = true
        while let slash = dir.lastIndex(of: "/"), slash != dir.startIndex {
            dir = String(dir[..<slash])
            var info = stat()
            if stat(dir, &info) != 0 || info.st_mode & S_IXOTH == 0 { reachable = false; break }
        }
        var info = stat()
        if reachable, stat(path, &info) == 0, info.st_mode & S_IXOTH != 0, info.st_mode & S_IROTH != 0 { return path }
        let copyDir = temporaryDirectory()
        chmod(copyDir, 0o755)
        let copy = copyDir + "/" + String(path[path.index(after: path.lastIndex(of: "/")!)...])
        let result = try runCommand("cp", [path, copy])
        guard result.status == 0 else { throw TestSupportError("cp \(path): \(result.stderr)") }
        chmod(copy, 0o755)
        return copy
    }

    /// A journal directory of the user graft runs as (0700: a journal is trusted only in a
    /// directory no other user can write).
    func stateDirectory(for privileges: [String]) -> String {
        let dir = temporaryDirectory()
        if privileges == Self.nobody { chown(dir, 65534, 65534) }
        return dir
    }

    /// `graft patch -p PID value_a --return 5` run through setpriv with `privileges`.
    func patchAs(_ privileges: [String], pid: Int32, state: String) throws -> (status: Int32, stdout: String, stderr: String) {
        try runCommand("setpriv", privileges + ["--", try runnableByOthers(try graftBinary()), "patch", "-p", String(pid), "value_a", "--return", "5", "--state-dir", state])
    }

    /// value_a still returns 1 and no patch was journaled (no journal file in `state`).
    func expectUntouched(_ victim: Victim, state: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(victim.isAlive, sourceLocation: sourceLocation)
        let lines = victim.readLines(3, timeout: 3)
        #expect(lines.count == 3 && lines.allSatisfy { $0 == "a=1" }, "\(lines)", sourceLocation: sourceLocation)
        let journals = try runCommand("find", [state, "-name", "*.json"])
        #expect(journals.status == 0 && journals.stdout.isEmpty, "\(journals)", sourceLocation: sourceLocation)
    }

    @Test func anotherUsersProcessNamesBothUIDs() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let state = stateDirectory(for: Self.nobody)
        let result = try patchAs(Self.nobody, pid: victim.pid, state: state)
        expectOneLineError(result, "permission denied to trace process \(victim.pid): it belongs to uid 0 and graft runs as uid 65534 without CAP_SYS_PTRACE")
        try expectUntouched(victim, state: state)
    }

    @Test func rootWithoutCapSysPtraceNamesTheMissingCapabilities() throws {
        let victim = try Victim.launch("c_loop", arguments: ["20"])
        defer { victim.kill() }
        let state = stateDirectory(for: [])
        // Same uid (0), but the bounding set drops CAP_SYS_PTRACE: the target's permitted set is
        // then not a subset of graft's, which the kernel refuses (security/commoncap.c).
        let result = try patchAs(["--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace"], pid: victim.pid, state: state)
        expectOneLineError(result, "it holds capabilities graft lacks (CapPrm 0x80000 missing)")
        try expectUntouched(victim, state: state)
    }

    @Test func notDumpableProcessOfTheSameUser() throws {
        let path = try runnableByOthers(try Victims.path("c_loop"))
        let victim = try Victim.launchCommand("setpriv", arguments: Self.nobody + ["--", path, "20"],
                                              environment: ["VICTIM_NOT_DUMPABLE": "1"])
        defer { victim.kill() }
        let state = stateDirectory(for: Self.nobody)
        let result = try patchAs(Self.nobody, pid: victim.pid, state: state)
        expectOneLineError(result, "the process is not dumpable")
        try expectUntouched(victim, state: state)
        // The same user with a dumpable victim is allowed: the refusal above was about dumpability.
        let dumpable = try Victim.launchCommand("setpriv", arguments: Self.nobody + ["--", path, "20"])
        defer { dumpable.kill() }
        let allowed = try patchAs(Self.nobody, pid: dumpable.pid, state: state)
        #expect(allowed.status == 0, "\(allowed)")
        #expect(dumpable.waitForLine("a=5", timeout: 5))
    }
}
