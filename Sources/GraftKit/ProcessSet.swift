import GraftCore
import GraftPtrace
import Glibc

/// Sets of processes a command names at once: `-n NAME` (every process of a program) and the
/// descendants of a process (a service's forked workers).
public enum ProcessSet {
    /// Every process id in /proc, ascending.
    public static func all() -> [Int32] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var pids: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if let pid = Int32(name), pid > 0 { pids.append(pid) }
        }
        return pids.sorted()
    }

    /// The processes whose executable is `name` (its basename, or the whole path when `name` has a
    /// '/'), or whose comm is `name` (the kernel keeps 15 bytes of it; the executable of another
    /// user's process may not be readable): graft itself, zombies and kernel threads left out.
    public static func named(_ name: String) -> [Int32] {
        let me = getpid()
        return all().filter { pid in
            guard pid != me, let status = ProcFS.status(pid), status["VmSize"] != nil else { return false }
            if let state = status["State"], state.hasPrefix("Z") || state.hasPrefix("X") { return false }
            if let exe = FileIO.readLink("/proc/\(pid)/exe") {
                let path = exe.hasSuffix(" (deleted)") ? String(exe.dropLast(10)) : exe
                if name.contains("/") ? path == name : path.split(separator: "/").last.map(String.init) == name { return true }
            }
            let comm = ProcFS.commandName(pid)
            return !name.contains("/") && comm == String(decoding: name.utf8.prefix(15), as: UTF8.self)
        }
    }

    /// The parent of `pid` (PPid in /proc/PID/status), nil when it cannot be read.
    public static func parent(of pid: Int32) -> Int32? {
        ProcFS.status(pid)?["PPid"].flatMap { Int32($0) }
    }

    /// Every descendant of `pid` alive now (children, their children, …), parents before children.
    public static func descendants(of pid: Int32) -> [Int32] {
        var children: [Int32: [Int32]] = [:]
        for candidate in all() {
            if let parent = parent(of: candidate) { children[parent, default: []].append(candidate) }
        }
        var result: [Int32] = []
        var queue = children[pid] ?? []
        while !queue.isEmpty {
            let next = queue.removeFirst()
            result.append(next)
            queue += children[next] ?? []
        }
        return result
    }
}
