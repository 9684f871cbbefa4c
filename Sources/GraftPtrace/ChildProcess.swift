import CGraftShim
import GraftCore
import Glibc

/// A child started by graft (the demo's victim; later launch mode).
///
/// posix_spawn with an emptied signal mask and default dispositions: threads created by Swift's
/// runtime block SIGTERM & co., and a child inherits the mask, so without this it would ignore them.
/// Foundation's `Process` is not used: it leaks a socket into grandchildren and reaps with its own
/// waitpid, which would steal ptrace stops.
public final class ChildProcess: @unchecked Sendable {
    public let pid: Int32
    /// Read end of the child's stdout, when captured.
    public let stdoutFD: Int32
    private var buffer: [UInt8] = []
    private var reaped = false

    private init(pid: Int32, stdoutFD: Int32) {
        self.pid = pid
        self.stdoutFD = stdoutFD
    }

    deinit {
        kill()
        if stdoutFD >= 0 { close(stdoutFD) }
    }

    /// Starts `path` with `arguments`; stdout is captured when `captureStdout`, stdin is /dev/null.
    public static func spawn(_ path: String, arguments: [String] = [], captureStdout: Bool = true) throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var pipeFDs: [Int32] = [-1, -1]
        if captureStdout {
            guard pipe(&pipeFDs) == 0 else {
                throw GraftError.systemCall(name: "pipe2", errno: errno, context: "capturing \(path)'s output")
            }
            _ = fcntl(pipeFDs[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(pipeFDs[1], F_SETFD, FD_CLOEXEC)
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
        }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        if captureStdout { close(pipeFDs[1]) }
        guard rc == 0 else {
            if captureStdout { close(pipeFDs[0]) }
            throw GraftError.systemCall(name: "posix_spawn", errno: rc, context: path)
        }
        return ChildProcess(pid: pid, stdoutFD: captureStdout ? pipeFDs[0] : -1)
    }

    /// The next line of stdout, or nil after `timeout` seconds or at end of file.
    public func readLine(timeout: Double = 5) -> String? {
        let deadline = graft_monotonic_ns() + UInt64(timeout * 1e9)
        while true {
            if let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            let now = graft_monotonic_ns()
            guard stdoutFD >= 0, now < deadline else { return nil }
            var poller = pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(max(1, (deadline - now) / 1_000_000)))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(stdoutFD, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// Drops whatever stdout has buffered so far.
    public func drain() {
        while readLine(timeout: 0.001) != nil {}
    }

    /// Waits for the child to exit, dropping its captured stdout meanwhile (so it never blocks on a
    /// full pipe), and reaps it. Returns the exit code, or 128 + the signal that killed it.
    public func waitForExit() -> Int32 {
        if stdoutFD >= 0 { while readLine(timeout: 3600) != nil {} }  // nil at end of file: it exited
        var status: Int32 = 0
        while graft_waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { reaped = true; return -1 }
        }
        reaped = true
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// SIGKILL and reap (this pid only). Idempotent.
    public func kill() {
        guard !reaped else { return }
        _ = Glibc.kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = graft_waitpid(pid, &status, 0)
        reaped = true
    }
}
