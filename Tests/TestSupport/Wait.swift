import Glibc

// Tests synchronise on the event itself — a line, a /proc state, a file, a counter that moves —
// never on a fixed sleep: a loaded machine then makes a test slower, not red. The timeouts are
// generous (the event normally comes within milliseconds); running out of one is a failure that
// says what was awaited.

/// Polls `condition` until it holds; throws "timed out after T s waiting for WHAT" when it does not
/// within `timeout` seconds. `what` describes the event (it is evaluated only for the message).
public func waitUntil(_ what: @autoclosure () -> String, timeout: Double = 30,
                      _ condition: () throws -> Bool) throws {
    let deadline = monotonicNow() + timeout
    var pause: useconds_t = 1000
    while true {
        if try condition() { return }
        if monotonicNow() >= deadline {
            throw TestSupportError("timed out after \(timeout) s waiting for \(what())")
        }
        usleep(pause)  // a polling interval, not a synchronisation: the condition is checked again
        pause = min(pause * 2, 20_000)
    }
}

/// The scheduler state letter of every thread of `pid` (/proc/PID/task/TID/stat): "R", "S", "t"
/// (ptrace stop), "T" (stopped), "Z" (zombie) … Empty when the process is gone.
public func procThreadStates(_ pid: Int32) -> [Int32: String] {
    var states: [Int32: String] = [:]
    guard let dir = opendir("/proc/\(pid)/task") else { return states }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard let tid = Int32(name), let stat = readTextFile("/proc/\(pid)/task/\(tid)/stat"),
              let close = stat.lastIndex(of: ")") else { continue }
        states[tid] = String(stat[stat.index(after: close)...].dropFirst().prefix(1))
    }
    return states
}

/// The number of the system call thread `tid` of `pid` is blocked in (/proc/PID/task/TID/syscall),
/// or nil while it runs (or the file cannot be read).
public func blockedSyscall(pid: Int32, tid: Int32) -> Int? {
    guard let text = readTextFile("/proc/\(pid)/task/\(tid)/syscall"),
          let first = text.split(separator: " ").first else { return nil }
    return Int(first.trimmingSuffixNewline())
}

/// Whether signal `sig` is pending for the process (ShdPnd of /proc/PID/status) or any of its
/// threads (SigPnd): false once it has been delivered.
public func signalPending(_ sig: Int32, pid: Int32) -> Bool {
    let bit: UInt64 = 1 << UInt64(sig - 1)
    var masks: [String] = []
    if let text = readTextFile("/proc/\(pid)/status") {
        masks += text.split(separator: "\n").filter { $0.hasPrefix("ShdPnd:") }.map(String.init)
    }
    for tid in procThreadStates(pid).keys {
        if let text = readTextFile("/proc/\(pid)/task/\(tid)/status") {
            masks += text.split(separator: "\n").filter { $0.hasPrefix("SigPnd:") }.map(String.init)
        }
    }
    return masks.contains { line in
        let hex = line.split(separator: ":").last.map { $0.trimmingCharacters() } ?? ""
        return (UInt64(hex, radix: 16) ?? 0) & bit != 0
    }
}

extension Victim {
    /// Waits until the victim's stderr so far contains `text`; false on timeout or end of output.
    public func waitForStderr(containing text: String, timeout: Double = 30) -> Bool {
        (try? waitUntil("", timeout: timeout) { stderrOutput.contains(text) }) != nil
    }
}

private extension Substring {
    func trimmingSuffixNewline() -> Substring {
        var s = self
        while s.last == "\n" { s.removeLast() }
        return s
    }
    func trimmingCharacters() -> String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" || $0 == "\n" }).reversed())
    }
}

/// /proc/PID/task/TID/status's Cpus_allowed_list (`0-1`, `1`): the CPUs a thread may run on.
public func allowedCPUs(_ pid: Int32, _ tid: Int32) -> String? {
    guard let text = readTextFile("/proc/\(pid)/task/\(tid)/status") else { return nil }
    return text.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }.map {
        String($0.dropFirst("Cpus_allowed_list:".count).drop(while: { $0 == " " || $0 == "\t" }))
    }
}
