import Glibc

/// The test victims of TestTargets/ (see TestTargets/README.md): where they are built and how.
public enum Victims {
    /// The package root: this file is <root>/Tests/TestSupport/Victims.swift.
    public static var packageRoot: String {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }

    /// Absolute directory the victims are built into: <root>/.build/victims, or $GRAFT_VICTIMS_DIR.
    public static var directory: String {
        if let custom = getenv("GRAFT_VICTIMS_DIR").map({ String(cString: $0) }), custom.hasPrefix("/") {
            return custom
        }
        return packageRoot + "/.build/victims"
    }

    /// Runs `make -s -jN -C <root>/TestTargets OUT=<directory>` once per test process (later calls
    /// return the cached result, a failure included). Thread-safe; concurrent test processes are
    /// serialized by flock on <directory>/.build.lock. Throws with make's output on failure.
    public static func build() throws {
        try buildState.withLock {
            if let result = buildState.result { return try result.get() }
            let result = Result { try runMake() }
            buildState.result = result
            try result.get()
        }
    }

    /// The path of victim `name`, building first if needed. Throws if the build failed or the
    /// victim does not exist.
    public static func path(_ name: String) throws -> String {
        try build()
        let path = directory + "/" + name
        if access(path, X_OK) != 0 {
            throw TestSupportError("no victim \(name) at \(path): is it in TestTargets/Makefile's VICTIMS?")
        }
        return path
    }

    private final class BuildState: @unchecked Sendable {
        private let lock = TestLock()
        var result: Result<Void, any Error>?
        func withLock<T>(_ body: () throws -> T) rethrows -> T { try lock.withLock(body) }
    }
    private static let buildState = BuildState()

    private static func runMake() throws {
        let dir = directory
        try makeDirectories(dir)
        let lockPath = dir + "/.build.lock"
        let lockFD = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        if lockFD < 0 { throw TestSupportError("open \(lockPath): \(String(cString: strerror(errno)))") }
        defer { close(lockFD) } // releases the flock
        while flock(lockFD, LOCK_EX) != 0 {
            if errno != EINTR { throw TestSupportError("flock \(lockPath): \(String(cString: strerror(errno)))") }
        }
        let jobs = max(2, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let args = ["-s", "-j\(jobs)", "-C", packageRoot + "/TestTargets", "OUT=" + dir]
        let r = try runCommand("make", args, timeout: 600)
        if r.status != 0 {
            throw TestSupportError("""
                building the victims failed: make \(args.joined(separator: " ")) -> status \(r.status)
                \(r.stdout)\(r.stderr)
                """)
        }
    }

    private static func makeDirectories(_ path: String) throws {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw TestSupportError("mkdir \(current): \(String(cString: strerror(errno)))")
            }
        }
    }
}
