import Glibc

// Process hygiene for everything tests start (victims, the graft CLI, nm, objdump …).
//
// - posix_spawn with POSIX_SPAWN_SETSIGMASK (empty mask) and POSIX_SPAWN_SETSIGDEF (all signals to
//   default): children spawned from Swift otherwise inherit SIGTERM blocked (and our SIGPIPE ignore).
// - Pipes are created O_CLOEXEC and every other descriptor is closed in the child (closefrom), so a
//   child never holds another test's pipe end (a leaked write end means EOF never comes).
// - We only ever wait for our own pid, never waitpid(-1): a tracer in this process must get its stops.
// - Reads poll with timeouts; nothing here blocks forever.

/// An error from the test support code; `description` says what happened, with the output seen.
public struct TestSupportError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Decoders for a raw wait status (WIFEXITED & co. are C macros Swift cannot import).
public enum WaitStatus {
    /// WEXITSTATUS when the process exited normally, else nil.
    public static func exitCode(_ status: Int32) -> Int32? {
        (status & 0x7f) == 0 ? (status >> 8) & 0xff : nil
    }
    /// WTERMSIG when the process was killed by a signal, else nil.
    public static func signal(_ status: Int32) -> Int32? {
        let low = status & 0x7f
        return low != 0 && low != 0x7f ? low : nil
    }
    /// "exited 0", "killed by signal 15 (SIGTERM)", …
    public static func describe(_ status: Int32) -> String {
        if let code = exitCode(status) { return "exited \(code)" }
        if let sig = signal(status) {
            let name = strsignal(sig).map { String(cString: $0) } ?? "?"
            return "killed by signal \(sig) (\(name))\((status & 0x80) != 0 ? ", core dumped" : "")"
        }
        return "wait status 0x\(String(status, radix: 16))"
    }
}

/// A pthread mutex (Swift 6 globals must be Sendable; NSLock would need Foundation).
final class TestLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    deinit { pthread_mutex_destroy(mutex); mutex.deallocate() }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// Monotonic seconds.
func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Milliseconds left until `deadline`, for poll(2): never negative.
func pollMilliseconds(until deadline: Double) -> Int32 {
    let left = deadline - monotonicNow()
    return left <= 0 ? 0 : Int32(min(left * 1000, 3_600_000).rounded(.up))
}

/// The whole text of a small file (e.g. under /proc), or nil.
public func readTextFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return nil }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

// MARK: - Low-level spawn

/// Writing to a pipe whose reader died must give EPIPE, not kill the test process. Children get
/// SIGPIPE back to default through POSIX_SPAWN_SETSIGDEF.
private let ignoreSIGPIPE: Void = { _ = Glibc.signal(SIGPIPE, SIG_IGN) }()

private typealias Pipe2Function = @convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> Int32
private typealias CloseFromFunction = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

// pipe2, posix_spawn_file_actions_addclosefrom_np and environ are not visible through Swift's Glibc
// module (it is not built with _GNU_SOURCE): look them up at run time.
private struct GNUFunctions: @unchecked Sendable {
    let pipe2: Pipe2Function?
    let addCloseFrom: CloseFromFunction?
    let environ: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?
}
private let gnu = GNUFunctions(
    pipe2: dlsym(nil, "pipe2").map { unsafeBitCast($0, to: Pipe2Function.self) },
    addCloseFrom: dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: CloseFromFunction.self) },
    environ: dlsym(nil, "environ").map { $0.assumingMemoryBound(to: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?.self) })

/// Serializes pipe creation with spawning when pipe2 is missing (pipe + FD_CLOEXEC is not atomic).
private let spawnLock = TestLock()

/// A close-on-exec pipe: (read end, write end).
private func makePipe() throws -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    if let pipe2 = gnu.pipe2 {
        if pipe2(&fds, O_CLOEXEC) != 0 { throw TestSupportError("pipe2: \(String(cString: strerror(errno)))") }
    } else {
        if pipe(&fds) != 0 { throw TestSupportError("pipe: \(String(cString: strerror(errno)))") }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    }
    return (fds[0], fds[1])
}

private func setNonBlocking(_ fd: Int32) {
    let flags = fcntl(fd, F_GETFL)
    _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
}

/// The current environment as KEY=VALUE strings, with `extra` overriding or adding entries.
private func environment(with extra: [String: String]) -> [String] {
    var result: [String] = []
    var seen = Set<String>()
    if let env = gnu.environ?.pointee {
        var i = 0
        while let entry = env[i] {
            let text = String(cString: entry)
            let key = String(text.prefix(while: { $0 != "=" }))
            if extra[key] == nil { result.append(text); seen.insert(key) }
            i += 1
        }
    }
    for (key, value) in extra.sorted(by: { $0.key < $1.key }) { result.append("\(key)=\(value)") }
    return result
}

/// A freshly spawned child and our ends of its pipes (-1 when not piped). Our ends are non-blocking.
struct SpawnedChild {
    var pid: pid_t
    var stdinFD: Int32
    var stdoutFD: Int32
    var stderrFD: Int32
}

/// posix_spawn(p) `path` with a clean signal mask and default dispositions. stdout and stderr are
/// piped to us; stdin is piped when `pipeStdin`, else /dev/null. A path without "/" is looked up
/// in PATH.
func spawnChild(_ path: String, _ arguments: [String], environment extra: [String: String] = [:],
                pipeStdin: Bool) throws -> SpawnedChild {
    _ = ignoreSIGPIPE
    return try spawnLock.withLock {
        var toClose: [Int32] = []       // the child's ends: closed here once it has them
        var ours: [Int32] = []          // our ends: closed too if spawning fails
        var spawned = false
        defer {
            toClose.forEach { close($0) }
            if !spawned { ours.forEach { close($0) } }
        }
        let out = try makePipe(); toClose.append(out.write); ours.append(out.read)
        let err = try makePipe(); toClose.append(err.write); ours.append(err.read)
        var input: (read: Int32, write: Int32)? = nil
        if pipeStdin { let p = try makePipe(); input = p; toClose.append(p.read); ours.append(p.write) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let input { posix_spawn_file_actions_adddup2(&actions, input.read, 0) }
        else { posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0) }
        posix_spawn_file_actions_adddup2(&actions, out.write, 1)
        posix_spawn_file_actions_adddup2(&actions, err.write, 2)
        if let closeFrom = gnu.addCloseFrom { _ = closeFrom(&actions, 3) }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t(); sigemptyset(&none)
        var all = sigset_t(); sigfillset(&all)
        // glibc's sigfillset leaves out its internal signals 32 and 33 (SIGCANCEL, SIGSETXID), and
        // posix_spawn then sets them to SIG_IGN in the child because this process handles them. A
        // shell-started process has them at default: set their bits by hand (sigaddset refuses).
        all.__val.0 |= (1 << 31) | (1 << 32)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment(with: extra).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = path.contains("/")
            ? posix_spawn(&pid, path, &actions, &attr, argv, envp)
            : posix_spawnp(&pid, path, &actions, &attr, argv, envp)
        if rc != 0 { throw TestSupportError("posix_spawn \(path): \(String(cString: strerror(rc)))") }
        spawned = true
        ours.forEach(setNonBlocking)
        return SpawnedChild(pid: pid, stdinFD: input?.write ?? -1, stdoutFD: out.read, stderrFD: err.read)
    }
}

/// Writes all of `bytes` to a non-blocking fd, polling for room until `deadline`. False on error
/// (EPIPE when the reader is gone) or timeout.
func writeAll(_ fd: Int32, _ bytes: [UInt8], deadline: Double) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n > 0 { offset += n; continue }
        if n < 0 && errno == EINTR { continue }
        if n < 0 && errno != EAGAIN { return false }
        if monotonicNow() >= deadline { return false }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        _ = poll(&p, 1, pollMilliseconds(until: deadline))
    }
    return true
}

/// Reads whatever is available now from a non-blocking fd into `buffer`. Returns false at EOF.
func readAvailable(_ fd: Int32, into buffer: inout [UInt8]) -> Bool {
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 { buffer.append(contentsOf: chunk[0..<n]); continue }
        if n == 0 { return false }
        if errno == EINTR { continue }
        return errno == EAGAIN // other errors count as EOF
    }
}

// MARK: - runCommand

/// Runs a program to completion with the same hygiene as victims (posix_spawn, clean signal mask,
/// default dispositions, no inherited descriptors) and returns its output. `path` without "/" is
/// looked up in PATH. `status` is the exit code, or 128 + signal number if a signal killed it.
/// On timeout the program is SIGKILLed and reaped, and this throws with the output so far.
/// Only this child's pid is ever waited for.
public func runCommand(_ path: String, _ args: [String], input: String? = nil, timeout: Double = 60,
                       environment extra: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    let child = try spawnChild(path, args, environment: extra, pipeStdin: input != nil)
    let deadline = monotonicNow() + timeout
    var out: [UInt8] = [], err: [UInt8] = []
    var outOpen = true, errOpen = true
    var pending = input.map { Array($0.utf8) } ?? []
    var stdinFD = child.stdinFD
    if stdinFD >= 0 && pending.isEmpty { close(stdinFD); stdinFD = -1 }
    var status: Int32 = 0
    var exited = false
    defer {
        if stdinFD >= 0 { close(stdinFD) }
        close(child.stdoutFD); close(child.stderrFD)
    }
    func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

    while true {
        if !exited {
            let r = waitpid(child.pid, &status, WNOHANG)
            if r == child.pid || (r < 0 && errno == ECHILD) { exited = true }
        }
        if exited {
            // Collect what is already written; a grandchild holding the pipes must not keep us here.
            if outOpen { _ = readAvailable(child.stdoutFD, into: &out) }
            if errOpen { _ = readAvailable(child.stderrFD, into: &err) }
            break
        }
        if !outOpen && !errOpen && stdinFD < 0 {
            // Output closed: the child is about to exit; wait for it without spinning.
            if monotonicNow() >= deadline { break }
            usleep(1000)
            continue
        }
        if monotonicNow() >= deadline { break }
        var fds: [pollfd] = []
        if outOpen { fds.append(pollfd(fd: child.stdoutFD, events: Int16(POLLIN), revents: 0)) }
        if errOpen { fds.append(pollfd(fd: child.stderrFD, events: Int16(POLLIN), revents: 0)) }
        if stdinFD >= 0 { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
        // Wake at least every 50 ms to notice an exit while a grandchild keeps the pipes open.
        _ = poll(&fds, nfds_t(fds.count), min(50, pollMilliseconds(until: deadline)))
        if outOpen { outOpen = readAvailable(child.stdoutFD, into: &out) }
        if errOpen { errOpen = readAvailable(child.stderrFD, into: &err) }
        if stdinFD >= 0 {
            let n = pending.withUnsafeBytes { write(stdinFD, $0.baseAddress, $0.count) }
            if n > 0 { pending.removeFirst(n) }
            if pending.isEmpty || (n < 0 && errno != EAGAIN && errno != EINTR) { close(stdinFD); stdinFD = -1 }
        }
    }
    if !exited {
        Glibc.kill(child.pid, SIGKILL)
        while waitpid(child.pid, &status, 0) < 0 && errno == EINTR {}
        throw TestSupportError("""
            \(path) \(args.joined(separator: " ")) timed out after \(timeout) s (killed)
            stdout: \(text(out))
            stderr: \(text(err))
            """)
    }
    let code = WaitStatus.exitCode(status) ?? (WaitStatus.signal(status).map { 128 + $0 } ?? -1)
    return (code, text(out), text(err))
}
