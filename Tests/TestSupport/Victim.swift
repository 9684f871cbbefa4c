import Glibc

/// A running victim process (a child of this test process), with its stdout read line by line.
///
/// Launch waits for the victim's `ready` line. Output is buffered by the pipe: a line read now may
/// have been printed before a patch was applied, so after changing the victim use
/// `waitForLine(where:)` (skips stale lines) or `drain()` first. The process is only ever waited
/// for by its own pid, and without consuming ptrace stops (waitid WNOWAIT probes), so a tracer in
/// this process keeps every stop. `kill()` runs on deinit: a test never leaves a victim behind.
public final class Victim: @unchecked Sendable {
    public let pid: Int32
    /// The victim's name as given to `launch` and the binary's path.
    public let name: String
    public let path: String

    private let lock = TestLock()
    private var stdinFD: Int32
    private var stdoutFD: Int32
    private var stderrFD: Int32
    private var stdoutBuffer: [UInt8] = []
    private var stderrBuffer: [UInt8] = []
    private var stdoutOpen = true
    private var stderrOpen = true
    private var lines: [String] = []
    private var status: Int32? = nil
    private var reapedElsewhere = false

    private init(name: String, path: String, child: SpawnedChild) {
        self.name = name
        self.path = path
        self.pid = child.pid
        self.stdinFD = child.stdinFD
        self.stdoutFD = child.stdoutFD
        self.stderrFD = child.stderrFD
    }

    deinit {
        kill()
        for fd in [stdinFD, stdoutFD, stderrFD] where fd >= 0 { close(fd) }
    }

    /// Starts victim `name` (built by `Victims.build()`; a name containing "/" is used as a path)
    /// with posix_spawn, an empty signal mask and default signal dispositions, stdout and stderr
    /// piped to us (separately) and stdin piped when `stdin` (else /dev/null), then waits up to
    /// `readyTimeout` seconds for the first stdout line to be exactly `ready`. Throws, after
    /// killing it, with what it printed and its exit status otherwise.
    public static func launch(_ name: String, arguments: [String] = [], environment extra: [String: String] = [:],
                              stdin: Bool = false, readyTimeout: Double = 10) throws -> Victim {
        let path = name.contains("/") ? name : try Victims.path(name)
        return try start(name: name, path: path, arguments: arguments, environment: extra, stdin: stdin,
                         ready: .firstLine, readyTimeout: readyTimeout)
    }

    /// Starts any program (`path`, or a name looked up in PATH) with the same hygiene as `launch`.
    /// When `waitForReady`, skips stdout lines until one is exactly `ready` (e.g. gdb with
    /// `-ex 'echo ready\n'`), throwing after `readyTimeout` s; otherwise returns at once.
    public static func launchCommand(_ path: String, arguments: [String] = [], environment extra: [String: String] = [:],
                                     stdin: Bool = false, waitForReady: Bool = true, readyTimeout: Double = 10) throws -> Victim {
        try start(name: path, path: path, arguments: arguments, environment: extra, stdin: stdin,
                  ready: waitForReady ? .anyLine : .none, readyTimeout: readyTimeout)
    }

    private enum ReadyRule { case firstLine, anyLine, none }

    private static func start(name: String, path: String, arguments: [String], environment extra: [String: String],
                              stdin: Bool, ready: ReadyRule, readyTimeout: Double) throws -> Victim {
        let child = try spawnChild(path, arguments, environment: extra, pipeStdin: stdin)
        // 1 MiB of pipe: a victim printing every 10 ms nobody reads does not block for minutes.
        _ = fcntl(child.stdoutFD, 1031 /* F_SETPIPE_SZ */, Int32(1 << 20))
        let victim = Victim(name: name, path: path, child: child)
        let line: String?
        switch ready {
        case .none: return victim
        case .firstLine: line = victim.readLine(timeout: readyTimeout)
        case .anyLine: line = victim.waitForLine(timeout: readyTimeout, where: { $0 == "ready" })
        }
        if line != "ready" {
            let what = line.map { "printed \"\($0)\" instead of ready" } ?? "did not print ready within \(readyTimeout) s"
            let state = victim.isAlive ? "was still running (killed)" : victim.waitExit(timeout: 1).map(WaitStatus.describe) ?? "is gone"
            victim.kill()
            throw TestSupportError("""
                victim \(name) (pid \(victim.pid)) \(what); it \(state)
                stdout: \(victim.transcript.joined(separator: "\n"))\(victim.pendingStdout)
                stderr: \(victim.stderrOutput)
                """)
        }
        return victim
    }

    // MARK: Output

    /// The next stdout line (without its newline), or nil on timeout or end of output.
    public func readLine(timeout: Double = 5) -> String? {
        lock.withLock { nextLine(deadline: monotonicNow() + timeout) }
    }

    /// Reads lines until one satisfies `predicate` and returns it; nil on timeout or end of output.
    /// The skipped lines stay in `transcript`.
    public func waitForLine(timeout: Double = 5, where predicate: (String) -> Bool) -> String? {
        lock.withLock {
            let deadline = monotonicNow() + timeout
            while let line = nextLine(deadline: deadline) {
                if predicate(line) { return line }
            }
            return nil
        }
    }

    /// Reads lines until one equals `line`; returns whether it came in time.
    @discardableResult
    public func waitForLine(_ line: String, timeout: Double = 5) -> Bool {
        waitForLine(timeout: timeout, where: { $0 == line }) != nil
    }

    /// The next `count` lines (fewer on timeout or end of output), all within `timeout`.
    public func readLines(_ count: Int, timeout: Double = 5) -> [String] {
        lock.withLock {
            let deadline = monotonicNow() + timeout
            var result: [String] = []
            while result.count < count, let line = nextLine(deadline: deadline) { result.append(line) }
            return result
        }
    }

    /// Every complete line available right now, without waiting: throws away stale output (e.g.
    /// before checking the effect of a patch).
    @discardableResult
    public func drain() -> [String] {
        lock.withLock {
            pump(deadline: 0)
            var result: [String] = []
            while let line = popLine() { result.append(line) }
            return result
        }
    }

    /// Every stdout line read so far (by any method), `ready` included.
    public var transcript: [String] { lock.withLock { lines } }

    /// Everything the victim wrote to stderr so far.
    public var stderrOutput: String {
        lock.withLock {
            if stderrOpen { stderrOpen = readAvailable(stderrFD, into: &stderrBuffer) }
            return String(decoding: stderrBuffer, as: UTF8.self)
        }
    }

    /// Unread bytes of an incomplete stdout line (for messages).
    private var pendingStdout: String {
        lock.withLock { stdoutBuffer.isEmpty ? "" : "\n" + String(decoding: stdoutBuffer, as: UTF8.self) }
    }

    // MARK: Input and signals

    /// Writes `text` to the victim's stdin (launch with `stdin: true`). Gives up after 5 s if the
    /// pipe stays full; a dead reader is ignored (SIGPIPE is ignored in the test process).
    public func writeStdin(_ text: String) {
        lock.withLock {
            guard stdinFD >= 0 else { return }
            _ = writeAll(stdinFD, Array(text.utf8), deadline: monotonicNow() + 5)
        }
    }

    /// Closes the victim's stdin: its next read returns 0 (EOF).
    public func closeStdin() {
        lock.withLock {
            if stdinFD >= 0 { close(stdinFD); stdinFD = -1 }
        }
    }

    /// kill(pid, sig), unless the victim has already been reaped (its pid may be reused).
    public func signal(_ sig: Int32) {
        lock.withLock {
            if status == nil && !reapedElsewhere { _ = Glibc.kill(pid, sig) }
        }
    }

    // MARK: Lifetime

    /// True while the process exists and has not exited (a stopped or traced victim is alive).
    public var isAlive: Bool {
        lock.withLock {
            if status != nil || reapedElsewhere { return false }
            if case .running = probe() { return true }
            return false
        }
    }

    /// The wait status once the victim has exited and been reaped by `waitExit`/`kill`, else nil.
    public var exitStatus: Int32? { lock.withLock { status } }

    /// Waits up to `timeout` s for the victim to exit, reaps it with waitpid(pid) (this pid only)
    /// and returns its raw wait status (decode with `WaitStatus`). Nil on timeout, or when another
    /// waiter in this process (a tracer thread) reaped it first. Repeated calls return the status.
    public func waitExit(timeout: Double = 5) -> Int32? {
        lock.withLock {
            let deadline = monotonicNow() + timeout
            var pause: useconds_t = 500
            while status == nil && !reapedElsewhere {
                switch probe() {
                case .running:
                    if monotonicNow() >= deadline { return nil }
                    usleep(pause)
                    pause = min(pause * 2, 20_000)
                case .exited(let seen):
                    var raw: Int32 = 0
                    let r = waitpid(pid, &raw, WNOHANG)
                    status = r == pid ? raw : seen
                case .gone:
                    reapedElsewhere = true
                }
            }
            return status
        }
    }

    /// SIGKILL and reap. Idempotent; also runs on deinit.
    public func kill() {
        lock.withLock {
            if status == nil && !reapedElsewhere { _ = Glibc.kill(pid, SIGKILL) }
            if stdinFD >= 0 { close(stdinFD); stdinFD = -1 }
        }
        _ = waitExit(timeout: 10)
    }

    /// The victim's thread ids (/proc/PID/task).
    public var threadIDs: [Int32] {
        guard let dir = opendir("/proc/\(pid)/task") else { return [] }
        defer { closedir(dir) }
        var tids: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if let tid = Int32(name) { tids.append(tid) }
        }
        return tids.sorted()
    }

    /// A field of /proc/PID/status (e.g. "SigBlk", "State", "TracerPid"), trimmed.
    public func procStatus(_ field: String) -> String? {
        guard let text = readTextFile("/proc/\(pid)/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return String(line.dropFirst(field.count + 1).drop(while: { $0 == " " || $0 == "\t" }))
        }
        return nil
    }

    // MARK: Private (called with the lock held)

    private enum ProcessState { case running, exited(Int32), gone }

    /// waitid(P_PID, pid, WEXITED|WNOHANG|WNOWAIT): sees an exit without reaping, and never
    /// consumes a ptrace stop (a stop it sees is left for the tracer and counts as running).
    private func probe() -> ProcessState {
        var info = siginfo_t()
        while true {
            if waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 { break }
            if errno == EINTR { continue }
            return .gone // ECHILD: someone else reaped it
        }
        if info._sifields._sigchld.si_pid == 0 { return .running }
        let value = info._sifields._sigchld.si_status
        switch info.si_code {
        case Int32(CLD_EXITED): return .exited((value & 0xff) << 8)
        case Int32(CLD_KILLED): return .exited(value & 0x7f)
        case Int32(CLD_DUMPED): return .exited((value & 0x7f) | 0x80)
        default: return .running // CLD_TRAPPED / CLD_STOPPED: a stop, not an exit
        }
    }

    private func popLine() -> String? {
        guard let newline = stdoutBuffer.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let line = String(decoding: stdoutBuffer[..<newline], as: UTF8.self)
        stdoutBuffer.removeSubrange(...newline)
        lines.append(line)
        return line
    }

    private func nextLine(deadline: Double) -> String? {
        while true {
            if let line = popLine() { return line }
            if !stdoutOpen {
                if stdoutBuffer.isEmpty { return nil }
                let rest = String(decoding: stdoutBuffer, as: UTF8.self)
                stdoutBuffer.removeAll()
                lines.append(rest)
                return rest
            }
            if monotonicNow() >= deadline { return nil }
            pump(deadline: deadline)
        }
    }

    /// Waits until stdout or stderr has data (or the deadline), then reads what is there.
    private func pump(deadline: Double) {
        var fds: [pollfd] = []
        if stdoutOpen { fds.append(pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)) }
        if stderrOpen { fds.append(pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0)) }
        if fds.isEmpty { return }
        let rc = poll(&fds, nfds_t(fds.count), deadline == 0 ? 0 : pollMilliseconds(until: deadline))
        if rc < 0 && errno != EINTR { stdoutOpen = false; stderrOpen = false; return }
        if stdoutOpen { stdoutOpen = readAvailable(stdoutFD, into: &stdoutBuffer) }
        if stderrOpen { stderrOpen = readAvailable(stderrFD, into: &stderrBuffer) }
    }
}
