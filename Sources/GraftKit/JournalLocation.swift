import FoundationEssentials
import GraftCore
import GraftPtrace
import Glibc

/// Where journals live, whether graft may believe one, and the removal of those whose process is gone.
///
/// A journal is a list of bytes graft will write into a process: whoever can write it can make
/// `unpatch` write anything. So graft acts only on a journal file made by the invoking user or root
/// (owner of the file), in a directory owned by one of them that nobody else can write (no group or
/// other write bit), below directories that nobody else can change either (or that are sticky, like
/// /tmp: nobody else can rename what is in them). The same rules as OpenSSH's `secure_path`.
///
/// Default directories, the first usable one taking new journals (each user's own, mode 0700):
/// 1. `/run/graft/UID`: `/run/graft` is made by root (mode 1777, sticky, like /run/lock) — a tmpfs,
///    gone at reboot like the processes it describes; other users join it once root has made it;
/// 2. `$XDG_RUNTIME_DIR/graft` (systemd's per-user tmpfs, when it is the user's own);
/// 3. `$HOME/.local/state/graft` when HOME is a directory of the user's;
/// 4. `/tmp/graft-UID` (a user without a home: nobody, daemons' users).
/// A journal already in one of them is found there (it stays where it was made).
extension Journal {
    /// The root of the shared tmpfs location (tests may not change it: it is the system's).
    static let sharedRoot = "/run/graft"

    /// This user's default directories, in order of preference; the first is where a new journal
    /// goes (see the type's comment).
    static func defaultDirectories(uid: uid_t = geteuid(), environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        var directories: [String] = []
        var info = stat()
        let shared = "\(sharedRoot)/\(uid)"
        if uid == 0 {
            directories.append(shared)  // root makes /run/graft when it is missing
        } else if lstat(sharedRoot, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == 0,
                  info.st_mode & S_ISVTX != 0 || info.st_mode & 0o022 == 0,
                  access(shared, W_OK) == 0 || access(sharedRoot, W_OK) == 0 {
            directories.append(shared)
        }
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/"), stat(runtime, &info) == 0,
           (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == uid, info.st_mode & 0o022 == 0, access(runtime, W_OK) == 0 {
            directories.append(runtime + "/graft")
        }
        if let home = environment["HOME"], home.hasPrefix("/"), home != "/", stat(home, &info) == 0,
           (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == uid, access(home, W_OK) == 0 {
            directories.append(home + "/.local/state/graft")
        }
        directories.append("/tmp/graft-\(uid)")
        return directories
    }

    /// Why graft must not act on journals in `directory` (nil: it may): it is not a directory, it
    /// belongs to someone other than `uid` and root, someone else can write it, or one of the
    /// directories above it lets someone else replace it. A missing directory is fine (graft makes it).
    static func directoryProblem(_ directory: String, uid: uid_t = geteuid()) -> String? {
        var info = stat()
        guard lstat(directory, &info) == 0 else { return errno == ENOENT ? nil : "cannot examine it: \(Errno.describe(errno))" }
        if (info.st_mode & S_IFMT) == S_IFLNK {
            // Followed once: the place it points to is judged like any other.
            guard let target = FileIO.readLink(directory) else { return "it is a symbolic link graft cannot read" }
            let resolved = target.hasPrefix("/") ? target : String(directory[..<(directory.lastIndex(of: "/") ?? directory.startIndex)]) + "/" + target
            guard stat(directory, &info) == 0 else { return nil }
            return directoryProblem(resolved, uid: uid).map { "it is a symbolic link to \(resolved): \($0)" }
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return "it is not a directory" }
        if info.st_uid != uid && info.st_uid != 0 {
            return "it belongs to uid \(info.st_uid), not to you (uid \(uid)) or root"
        }
        if info.st_mode & 0o022 != 0 {
            return "other users can write it (mode \(octal(info.st_mode & 0o7777))); graft keeps journals only in a directory no one but you (uid \(uid)) and root can write"
        }
        // Directories above: someone else must not be able to swap this one for theirs.
        var path = directory.hasPrefix("/") ? directory : (FileIO.readLink("/proc/self/cwd") ?? "") + "/" + directory
        while let slash = path.lastIndex(of: "/") {
            path = String(path[..<slash])
            let parent = path.isEmpty ? "/" : path
            guard stat(parent, &info) == 0 else { break }
            let sticky = info.st_mode & S_ISVTX != 0
            if (info.st_uid != uid && info.st_uid != 0) || (info.st_mode & 0o022 != 0 && !sticky) {
                return "\(parent) above it can be changed by other users (uid \(info.st_uid), mode \(octal(info.st_mode & 0o7777)))"
            }
            if path.isEmpty { break }
        }
        return nil
    }

    /// Why graft must not act on the journal file open as `fd` (nil: it may): not a regular file, or
    /// made by someone other than `uid` and root.
    static func fileProblem(_ fd: Int32, uid: uid_t = geteuid()) -> String? {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return "cannot examine it: \(Errno.describe(errno))" }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return "it is not a regular file" }
        if info.st_uid != uid && info.st_uid != 0 {
            return "it was made by uid \(info.st_uid), not by you (uid \(uid)) or root; graft does not act on it"
        }
        if info.st_mode & 0o022 != 0 {
            return "other users can write it (mode \(octal(info.st_mode & 0o7777))); graft does not act on it"
        }
        return nil
    }

    static func octal(_ mode: mode_t) -> String { "0" + String(mode, radix: 8) }

    /// Makes `directory` (mode 0700; `/run/graft` itself 1777 when root makes it) and checks it
    /// can be trusted.
    func ensureDirectory(_ directory: String) throws {
        if directory.isEmpty {
            throw GraftError.journal(path: "''", reason: "the journal directory is an empty path; give --state-dir (or GRAFT_STATE_DIR) a directory")
        }
        var components: [String] = []
        for part in directory.split(separator: "/") {
            components.append(String(part))
            let partial = (directory.hasPrefix("/") ? "/" : "") + components.joined(separator: "/")
            let sharedRoot = !explicit && partial == Journal.sharedRoot
            if mkdir(partial, sharedRoot ? 0o755 : 0o700) == 0 {
                if sharedRoot { chmod(partial, 0o1777) }  // every user's own directory goes in it
            } else if errno != EEXIST {
                let reason = "cannot create the directory: \(Errno.describe(errno))"
                throw GraftError.journal(path: directory, reason: explicit ? reason : reason + "; set GRAFT_STATE_DIR to a directory of yours")
            }
        }
        if !explicit && geteuid() == 0 && directory == "\(Journal.sharedRoot)/0" { Journal.openSharedRoot() }
        if let problem = Journal.directoryProblem(directory) {
            throw GraftError.journal(path: directory, reason: "not trusted: \(problem)")
        }
    }

    /// Root, once: `/run/graft` as made by earlier versions (mode 0700, root's journals in it) becomes
    /// the shared root every user's directory goes in (1777). Root's journals of live processes move
    /// into `/run/graft/0` first (they stay root's, in a directory only root can write); those of
    /// processes that are gone are removed.
    static func openSharedRoot() {
        var info = stat()
        guard lstat(sharedRoot, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == 0,
              info.st_mode & 0o7777 != 0o1777 else { return }
        prune(directory: sharedRoot)
        let own = "\(sharedRoot)/0"
        if let dir = opendir(sharedRoot) {
            var names: [String] = []
            while let entry = readdir(dir) {
                names.append(withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) })
            }
            closedir(dir)
            for name in names where instance(inFileName: name) != nil {
                if name.hasSuffix(".json") { rename("\(sharedRoot)/\(name)", "\(own)/\(name)") } else { unlink("\(sharedRoot)/\(name)") }
            }
        }
        chmod(sharedRoot, 0o1777)
    }

    // MARK: - Pruning

    /// Removes the journals, locks and half-written temporary files in this user's journal
    /// directories whose process no longer exists (its pid is gone or now belongs to a later
    /// process). A lock another graft holds stays. Returns the removed paths.
    @discardableResult
    public func prune() -> [String] {
        var removed: [String] = []
        for directory in [directory] + otherDirectories where Journal.directoryProblem(directory) == nil {
            removed += Journal.prune(directory: directory)
        }
        // Root: every user's directory under /run/graft too (only files of processes that are gone).
        if geteuid() == 0, !explicit, let dir = opendir(Journal.sharedRoot) {
            var users: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if let uid = UInt32(name), uid != 0 { users.append("\(Journal.sharedRoot)/\(uid)") }
            }
            closedir(dir)
            for user in users {
                var info = stat()
                guard lstat(user, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, Journal.directoryProblem(user, uid: info.st_uid) == nil else { continue }
                removed += Journal.prune(directory: user)
            }
        }
        return removed
    }

    @discardableResult
    static func prune(directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            names.append(name)
        }
        closedir(dir)
        var removed: [String] = []
        for name in names {
            guard let instance = instance(inFileName: name) else { continue }
            if ProcFS.startTime(instance.pid) == instance.startTime { continue }
            let path = "\(directory)/\(name)"
            var info = stat()
            guard lstat(path, &info) == 0, info.st_uid == geteuid() || geteuid() == 0 else { continue }
            if name.hasSuffix(".lock") {
                // A lock someone holds (a graft command on its way out) is theirs to leave.
                let fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
                guard fd >= 0 else { continue }
                defer { close(fd) }
                guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }
                if unlink(path) == 0 { removed.append(path) }
            } else if unlink(path) == 0 {
                removed.append(path)
            }
        }
        return removed
    }

    /// `PID-START.json`, `PID-START.lock`, `PID-START.json.tmp.N` → the instance; nil otherwise.
    static func instance(inFileName name: String) -> ProcessInstance? {
        let stem: Substring
        if name.hasSuffix(".json") || name.hasSuffix(".lock") {
            stem = name.dropLast(5)
        } else if let dot = name.firstIndex(of: "."), name[dot...].hasPrefix(".json.tmp."), UInt32(name[dot...].dropFirst(10)) != nil {
            stem = name[..<dot]
        } else {
            return nil
        }
        let parts = stem.split(separator: "-")
        guard parts.count == 2, let pid = Int32(parts[0]), pid > 0, let start = UInt64(parts[1]) else { return nil }
        return ProcessInstance(pid: pid, startTime: start)
    }

    // MARK: - Other users' journals

    /// A journal of the same process made by another user (root's `list` shows them).
    public struct Foreign: Sendable {
        public let path: String
        public let uid: uid_t
        /// nil when it could not be read or trusted (then `problem` says why).
        public let contents: JournalContents?
        public let problem: String?
    }

    /// As root: the journals of `instance` other users made in their default directories
    /// (`/run/graft/UID`, `/run/user/UID/graft`, `/tmp/graft-UID`, and the process owner's
    /// `~/.local/state/graft`). Empty for anyone else, and with an explicit directory.
    public func foreignJournals(_ instance: ProcessInstance) -> [Foreign] {
        guard geteuid() == 0, !explicit else { return [] }
        let own = Set([directory] + otherDirectories)
        var directories: [String] = []
        func subdirectories(_ root: String, _ make: (String) -> String?) {
            guard let dir = opendir(root) else { return }
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if name != ".", name != "..", let path = make(name) { directories.append(path) }
            }
            closedir(dir)
        }
        subdirectories(Journal.sharedRoot) { UInt32($0) != nil ? "\(Journal.sharedRoot)/\($0)" : nil }
        subdirectories("/run/user") { UInt32($0) != nil ? "/run/user/\($0)/graft" : nil }
        subdirectories("/tmp") { $0.hasPrefix("graft-") && UInt32($0.dropFirst(6)) != nil ? "/tmp/\($0)" : nil }
        if let status = ProcFS.readFile("/proc/\(instance.pid)/status"),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }) {
            for uid in Set(line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().compactMap { UInt32($0) }) {
                if let entry = getpwuid(uid), let home = entry.pointee.pw_dir {
                    directories.append(String(cString: home) + "/.local/state/graft")
                }
            }
        }
        var found: [Foreign] = []
        var seen: Set<String> = []
        for directory in directories where !own.contains(directory) && seen.insert(directory).inserted {
            let path = "\(directory)/\(instance.pid)-\(instance.startTime).json"
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            var owner = stat()
            let ownerUID = stat(directory, &owner) == 0 ? owner.st_uid : info.st_uid
            if let problem = Journal.directoryProblem(directory, uid: ownerUID) {
                found.append(Foreign(path: path, uid: info.st_uid, contents: nil, problem: "not trusted: \(problem)"))
                continue
            }
            do {
                let contents = try Journal.read(path, uid: ownerUID)
                found.append(Foreign(path: path, uid: info.st_uid, contents: contents, problem: nil))
            } catch let error as GraftError {
                found.append(Foreign(path: path, uid: info.st_uid, contents: nil, problem: error.description))
            } catch {
                found.append(Foreign(path: path, uid: info.st_uid, contents: nil, problem: "\(error)"))
            }
        }
        return found
    }
}
