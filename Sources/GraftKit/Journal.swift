import CGraftShim
import FoundationEssentials
import GraftCore
import GraftPtrace
import Glibc

/// One process instance: a PID plus its start time (field 22 of /proc/PID/stat). A PID the kernel
/// reuses for a new process has another start time, so the journal never confuses the two.
public struct ProcessInstance: Sendable, Equatable, Codable {
    public let pid: Int32
    public let startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    /// The instance running now under `pid`.
    public static func current(_ pid: Int32) throws -> ProcessInstance {
        guard pid > 0, let start = ProcFS.startTime(pid) else { throw GraftError.noSuchProcess(pid: pid) }
        return ProcessInstance(pid: pid, startTime: start)
    }
}

/// A patch as recorded in the journal.
public struct PatchRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Recorded before the write: if graft died mid-way, `list` reads memory to tell what happened.
        case applying, applied, reverted
    }

    public var id: Int
    public var address: String          // hex
    public var function: String        // "c_loop!value_a+0x4"
    public var module: String          // path of the mapped file
    public var buildID: String?
    public var kind: String             // "jump" or "return"
    public var target: String?          // jump: "c_loop!value_b"
    public var targetAddress: String?   // jump: hex
    public var returnValue: Int64?      // return
    public var originalBytes: String    // hex
    public var newBytes: String         // hex
    public var state: State
    public var appliedAt: String        // ISO 8601 UTC
    public var revertedAt: String?
    /// A jump into a library graft loaded: its path (the file graft was given), build-id and base.
    public var library: String?
    public var libraryBuildID: String?
    public var libraryBase: String?
    /// The trampoline that runs the overwritten instructions and jumps back (hex), when the target
    /// library defines `graft_original_<symbol>`; its page (hex, 4 KiB, graft's own mapping); and
    /// what became of it: `mapped`, `kept` (a thread was still using it at revert), `freed`.
    public var trampoline: String?
    public var trampolinePage: String?
    public var trampolineState: String?
    /// The `graft_original_<symbol>` pointer graft set to the trampoline (hex address, and name).
    public var originalPointer: String?
    public var originalPointerSymbol: String?
    /// What the pointer holds after a revert: the original function, whole again (hex).
    public var originalEntry: String?
    /// A patch this process inherited from an ancestor it was forked from (after that ancestor was
    /// patched): the ancestor's pid, start time and patch id. graft found its bytes here.
    public var inheritedFrom: Int32?
    public var inheritedFromStartTime: UInt64?
    public var inheritedPatch: Int?

    public var addressValue: UInt64 { hexValue(address) ?? 0 }
    public var original: [UInt8] { bytes(fromHex: originalBytes) ?? [] }
    public var new: [UInt8] { bytes(fromHex: newBytes) ?? [] }
    public var range: Range<UInt64> { addressValue..<(addressValue + UInt64(new.count)) }
}

/// The journal file of one process instance.
public struct JournalContents: Codable, Sendable {
    public var pid: Int32
    public var startTime: UInt64
    public var executable: String
    public var nextID: Int
    public var patches: [PatchRecord]
    /// Libraries graft loaded into this process (absent in journals older than `graft inject`).
    public var libraries: [LibraryRecord]?
}

/// A library graft loaded, as recorded in the journal.
public struct LibraryRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable { case loaded, unloaded }
    /// The file graft was given (absolute).
    public var path: String
    public var buildID: String?
    /// Its path in /proc/PID/maps (`/memfd:libfix.so` when handed over through a memfd).
    public var mappedAs: String
    /// The module name LOCATIONs use (`libfix.so`: `libfix:fixed_price`).
    public var name: String
    /// Lowest and one-past-highest mapped address (hex).
    public var base: String
    public var end: String
    /// `dlopen`: the target's loader loaded it (`handle` is dlopen's handle); `graft`: graft mapped
    /// it itself (a target with no dynamic loader).
    public var loader: String
    public var handle: String?
    /// A library graft mapped itself: its load bias (hex; runtime = link-time address + bias).
    public var loadBias: String?
    public var state: State
    public var loadedAt: String
    public var unloadedAt: String?

    public var baseValue: UInt64 { hexValue(base) ?? 0 }
    public var endValue: UInt64 { hexValue(end) ?? 0 }
    public var range: Range<UInt64> { baseValue..<max(baseValue, endValue) }
}

/// Where graft records the patches it applied, outside the target: one JSON file per process instance
/// (`PID-STARTTIME.json`), replaced atomically (write to a temporary file, fsync, rename), and a lock
/// file (`PID-STARTTIME.lock`, flock) so two graft commands on one process cannot interleave.
///
/// The directory is `$GRAFT_STATE_DIR` (or `--state-dir`), else this user's first usable default
/// (`/run/graft/UID`, `$XDG_RUNTIME_DIR/graft`, `~/.local/state/graft`, `/tmp/graft-UID`: see
/// JournalLocation.swift, with the rules that decide whether a journal can be trusted).
public struct Journal: Sendable {
    /// Where new journals go.
    public let directory: String
    /// Given by the user (`--state-dir`, `$GRAFT_STATE_DIR`): the only place looked at.
    let explicit: Bool
    /// This user's other default directories, where a journal made earlier may be.
    let otherDirectories: [String]

    public init(directory: String? = nil) {
        let env = ProcessInfo.processInfo.environment
        if let directory {
            self.directory = directory
            explicit = true
            otherDirectories = []
        } else if let dir = env["GRAFT_STATE_DIR"], !dir.isEmpty {
            self.directory = dir
            explicit = true
            otherDirectories = []
        } else {
            let defaults = Journal.defaultDirectories(environment: env)
            // The first default that exists and can be trusted, or can be made.
            let usable = defaults.first { dir in
                var info = stat()
                if lstat(dir, &info) == 0 { return Journal.directoryProblem(dir) == nil && access(dir, W_OK) == 0 }
                let parent = String(dir[..<(dir.lastIndex(of: "/") ?? dir.startIndex)])
                if access(parent, W_OK) == 0 { return true }
                // Root makes /run/graft itself; ~/.local/state is made below a home of the user's.
                if parent == Journal.sharedRoot { return geteuid() == 0 && access("/run", W_OK) == 0 }
                return dir.hasSuffix("/.local/state/graft")
            } ?? defaults.last!
            self.directory = usable
            explicit = false
            otherDirectories = defaults.filter { $0 != usable }
        }
    }

    public static func defaultDirectory() -> String { Journal().directory }

    /// The directory holding `instance`'s journal: where one already is, else `directory`.
    func directory(for instance: ProcessInstance) -> String {
        if explicit { return directory }
        let name = "/\(instance.pid)-\(instance.startTime).json"
        for candidate in [directory] + otherDirectories where access(candidate + name, F_OK) == 0 { return candidate }
        return directory
    }

    public func path(for instance: ProcessInstance) -> String {
        "\(directory(for: instance))/\(instance.pid)-\(instance.startTime).json"
    }

    /// Takes the per-instance lock for the duration of `body`. Waits up to `timeout` seconds for
    /// another graft command to finish (default `$GRAFT_LOCK_TIMEOUT`, else 10); `cancel` returning a
    /// signal number ends the wait with `.interrupted`.
    public func withLock<T>(_ instance: ProcessInstance, timeout: Double? = nil, cancel: (@Sendable () -> Int32?)? = nil,
                            _ body: () throws -> T) throws -> T {
        let timeout = try timeout ?? Journal.lockTimeoutFromEnvironment()
        let home = directory(for: instance)
        try ensureDirectory(home)
        Journal.prune(directory: home)  // journals and locks of processes that are gone
        let lockPath = "\(home)/\(instance.pid)-\(instance.startTime).lock"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw GraftError.journal(path: lockPath, reason: "cannot open the lock file: \(Errno.describe(errno))") }
        defer { close(fd) }
        let deadline = Double(graft_monotonic_ns()) / 1e9 + timeout
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno != EWOULDBLOCK && errno != EINTR {
                throw GraftError.journal(path: lockPath, reason: "cannot lock: \(Errno.describe(errno))")
            }
            if Double(graft_monotonic_ns()) / 1e9 > deadline {
                let who = Journal.lockHolder(fd).map { holder -> String in
                    let name = ProcFS.commandName(holder)
                    return name == "graft" ? "another graft command (pid \(holder))" : "process \(holder) (\(name))"
                } ?? "another graft command"
                let seconds = timeout == timeout.rounded() ? String(Int(timeout)) : String(timeout)
                throw GraftError.journal(path: lockPath, reason: "\(who) has held the lock on process \(instance.pid) for over \(seconds) s; try again when it has finished")
            }
            if let signal = cancel?() { throw GraftError.interrupted(signal: signal) }
            usleep(10_000)
        }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    /// `$GRAFT_LOCK_TIMEOUT` seconds (a finite number, 0 or more), 10 when unset or empty.
    static func lockTimeoutFromEnvironment() throws -> Double {
        guard let raw = getenv("GRAFT_LOCK_TIMEOUT"), raw.pointee != 0 else { return 10 }  // unset or empty
        let text = String(cString: raw)
        guard let seconds = Double(text), seconds.isFinite, seconds >= 0 else {
            throw GraftError.usage("GRAFT_LOCK_TIMEOUT=\(text) is not a number of seconds (0 or more, e.g. 2.5)")
        }
        return seconds
    }

    /// The process holding the flock on `fd`'s file, from /proc/locks (`N: FLOCK ADVISORY WRITE PID
    /// MAJ:MIN:INODE 0 EOF`), or nil when it cannot be told.
    static func lockHolder(_ fd: Int32) -> Int32? {
        var info = stat()
        guard fstat(fd, &info) == 0, let text = ProcFS.readFile("/proc/locks") else { return nil }
        let major = (info.st_dev >> 8) & 0xfff, minor = (info.st_dev & 0xff) | ((info.st_dev >> 12) & 0xfff00)
        func hex2(_ v: UInt64) -> String { let h = String(v, radix: 16); return h.count < 2 ? "0" + h : h }
        let key = "\(hex2(UInt64(major))):\(hex2(UInt64(minor))):\(info.st_ino)"
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[1] == "FLOCK", fields[5] == key, let pid = Int32(fields[4]), pid != getpid() else { continue }
            return pid
        }
        return nil
    }

    public func load(_ instance: ProcessInstance) throws -> JournalContents {
        if directory.isEmpty {
            throw GraftError.journal(path: "''", reason: "the journal directory is an empty path; give --state-dir (or GRAFT_STATE_DIR) a directory")
        }
        let home = directory(for: instance)
        let file = path(for: instance)
        if access(file, F_OK) == 0, let problem = Journal.directoryProblem(home) {
            throw GraftError.journal(path: file, reason: "not trusted: the directory \(home): \(problem)")
        }
        guard var contents = try Journal.read(file) else {
            let exe = FileIO.readLink("/proc/\(instance.pid)/exe") ?? "unknown"
            var contents = JournalContents(pid: instance.pid, startTime: instance.startTime, executable: exe, nextID: 1, patches: [])
            adoptInherited(&contents, instance: instance)
            return contents
        }
        adoptInherited(&contents, instance: instance)
        return contents
    }

    /// The journal at `path`, nil when there is none; refused when `uid` (the invoking user) cannot
    /// trust the file (see `fileProblem`) or it is not a graft journal.
    static func read(_ file: String, uid: uid_t = geteuid()) throws -> JournalContents? {
        let fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT { return nil }
            if errno == ELOOP { throw GraftError.journal(path: file, reason: "not trusted: it is a symbolic link") }
            throw GraftError.journal(path: file, reason: "cannot read: \(Errno.describe(errno))")
        }
        let text: String
        do {
            defer { close(fd) }
            if let problem = fileProblem(fd, uid: uid) { throw GraftError.journal(path: file, reason: "not trusted: \(problem)") }
            guard let bytes = try? FileIO.readAll(path: "/proc/self/fd/\(fd)") else {
                throw GraftError.journal(path: file, reason: "cannot read: \(Errno.describe(errno))")
            }
            text = String(decoding: bytes, as: UTF8.self)
        }
        let contents: JournalContents
        do {
            contents = try JSONDecoder().decode(JournalContents.self, from: Data(text.utf8))
        } catch {
            throw GraftError.journal(path: file, reason: "not a graft journal (\(Journal.describe(error))); move it away to start afresh")
        }
        if let problem = Journal.problem(in: contents) {
            throw GraftError.journal(path: file, reason: "not a graft journal (\(problem)); move it away to start afresh")
        }
        return contents
    }

    /// What makes decoded contents unusable: a record whose address or bytes are not hex, whose
    /// original and new bytes differ in length, or an id used twice. nil when all is well.
    static func problem(in contents: JournalContents) -> String? {
        var ids: Set<Int> = []
        for record in contents.patches {
            let name = "patch \(record.id)"
            if !ids.insert(record.id).inserted { return "\(name) appears twice" }
            guard hexValue(record.address) != nil else {
                return "\(name): address \"\(record.address)\" is not a 0x hex address"
            }
            guard let new = bytes(fromHex: record.newBytes), !new.isEmpty else { return "\(name): newBytes \"\(record.newBytes)\" are not hex bytes" }
            guard let original = bytes(fromHex: record.originalBytes), !original.isEmpty else {
                return "\(name): originalBytes \"\(record.originalBytes)\" are not hex bytes"
            }
            if new.count != original.count {
                return "\(name): \(original.count) original bytes but \(new.count) new ones"
            }
            for (key, value) in [("trampolinePage", record.trampolinePage), ("originalPointer", record.originalPointer)] {
                if let value, hexValue(value) == nil {
                    return "\(name): \(key) \"\(value)\" is not a 0x hex address"
                }
            }
        }
        for library in contents.libraries ?? [] {
            for value in [library.base, library.end] where hexValue(value) == nil {
                return "library \(library.path): \"\(value)\" is not a 0x hex address"
            }
        }
        return nil
    }

    /// A decoding failure in a line: where in the file and what (not Swift's DecodingError dump).
    static func describe(_ error: any Error) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return keys.isEmpty ? "the top level" : String(keys.drop { $0 == "." })
        }
        switch error as? DecodingError {
        case .dataCorrupted(let context)?: return context.codingPath.isEmpty ? "not valid JSON" : "\(path(context)): \(context.debugDescription)"
        case .keyNotFound(let key, let context)?: return "no \"\(key.stringValue)\" in \(path(context))"
        case .typeMismatch(_, let context)?, .valueNotFound(_, let context)?: return "\(path(context)): \(context.debugDescription)"
        default: return "\(error)"
        }
    }

    public func save(_ contents: JournalContents, for instance: ProcessInstance) throws {
        try ensureDirectory(directory(for: instance))
        let file = path(for: instance)
        let temporary = file + ".tmp.\(getpid())"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(contents)
        do {
            try FileIO.replace(file, with: Array(data), temporary: temporary)
        } catch {
            // A typed `catch .systemCall(…)` pattern crashes Swift 6.3's compiler ("Found ownership error").
            guard case .systemCall(let step, let err, _) = error else { throw error }
            throw step == "open" ? GraftError.journal(path: temporary, reason: "cannot create: \(Errno.describe(err))")
                                 : GraftError.journal(path: file, reason: "cannot write: \(Errno.describe(err))")
        }
    }
}

/// UTC, ISO 8601 to the second ("2026-11-22T10:54:10Z"), with libc: Foundation's formatter costs
/// ~0.3 ms on first use.
func isoTimestamp() -> String {
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
    return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
