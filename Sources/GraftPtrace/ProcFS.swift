import CGraftShim
import GraftCore
import Glibc

/// Small readers of /proc: what the kernel says about a process before and while graft traces it.
public enum ProcFS {
    /// The whole content of a (small, virtual) file, or nil when it cannot be read (`FileIO.readText`).
    public static func readFile(_ path: String) -> String? { FileIO.readText(path: path) }

    /// The value of auxiliary vector entry `type` (`AT_ENTRY` 9, `AT_HWCAP` 16) from /proc/PID/auxv:
    /// pairs of 64-bit words, ended by `AT_NULL`.
    public static func auxiliaryValue(_ pid: Int32, type: UInt64) -> UInt64? {
        let fd = open("/proc/\(pid)/auxv", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var words = [UInt64](repeating: 0, count: 128)
        let n = words.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        guard n > 0 else { return nil }
        var i = 0
        while i + 1 < n / 8 {
            if words[i] == type { return words[i + 1] }
            if words[i] == 0 { break }
            i += 2
        }
        return nil
    }

    /// `/proc/PID/status` as key → value.
    public static func status(_ pid: Int32) -> [String: String]? {
        guard let text = readFile("/proc/\(pid)/status") else { return nil }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon])
            let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
            fields[key] = value
        }
        return fields
    }

    /// The command name (`comm`) of a process, or "unknown".
    /// The process (thread-group leader) a thread ID belongs to: TracerPid names the tracing thread,
    /// and a user wants the process ("gdb", "strace"), not a worker thread's name.
    public static func threadGroup(of tid: Int32) -> Int32 {
        status(tid)?["Tgid"].flatMap { Int32($0) } ?? tid
    }

    public static func commandName(_ pid: Int32) -> String {
        readFile("/proc/\(pid)/comm")?.trimmingCharacters(in: "\n ") ?? "unknown"
    }

    /// Field 22 of /proc/PID/stat: the start time in clock ticks since boot. With the PID it names a
    /// process instance: a PID reused by a new process has another start time.
    public static func startTime(_ pid: Int32) -> UInt64? {
        // fields[0] is field 3, so field 22 is fields[19].
        guard let fields = statFields("/proc/\(pid)/stat"), fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    /// The fields of a /proc/…/stat file after the comm (which may hold spaces and parentheses):
    /// element 0 is field 3, the state.
    static func statFields(_ path: String) -> [Substring]? {
        guard let text = readFile(path), let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    /// A thread's state letter (`R`, `S`, `t`, `Z`, …), nil when its /proc entry cannot be read.
    public static func threadState(_ pid: Int32, _ tid: Int32) -> Character? {
        statFields("/proc/\(pid)/task/\(tid)/stat")?.first?.first
    }

    /// Thread ids listed in /proc/PID/task, sorted (empty when the process is gone). Listed in C
    /// (`graft_list_tasks`): the attach re-lists with every thread stopped, inside the stop window.
    public static func threads(_ pid: Int32) -> [Int32] {
        var capacity = 64
        while true {
            var tids = [Int32](repeating: 0, count: capacity)
            let count = Int(tids.withUnsafeMutableBufferPointer { graft_list_tasks(pid, $0.baseAddress, Int32(capacity)) })
            if count < 0 { return [] }
            if count <= capacity {
                tids.removeLast(capacity - count)
                tids.sort()
                return tids
            }
            capacity = count + 16
        }
    }

    /// Thread `tid` of `pid` has exited or is exiting: its /proc entry is gone, or its state is
    /// zombie/dead (`Z`, `X`). A thread in that state cannot be attached (EPERM).
    public static func threadIsExiting(_ pid: Int32, _ tid: Int32) -> Bool {
        guard let state = threadState(pid, tid) else {
            // Gone; unreadable is not gone.
            return access("/proc/\(pid)/task/\(tid)", F_OK) != 0 && (errno == ENOENT || errno == ESRCH)
        }
        return state == "Z" || state == "X"
    }

    /// Throws the specific reason a process cannot be attached to, when one can be seen in /proc
    /// before asking the kernel (no such process, ourselves, zombie, kernel thread, already traced).
    public static func preflight(_ pid: Int32) throws {
        let status = try refuseUnpatchable(pid, allowSelf: false)
        if let tracer = status["TracerPid"].flatMap({ Int32($0) }), tracer != 0 {
            let process = threadGroup(of: tracer)
            throw GraftError.alreadyTraced(pid: pid, tracer: process, tracerName: commandName(process))
        }
    }

    /// The refusals that need neither a stop nor the target's memory, for every command that names a
    /// process, before it reads the maps: no such process, graft's own process (unless `allowSelf`:
    /// reading its own symbols or journal is harmless), zombie, kernel thread; then whether
    /// /proc/PID/maps opens (the same permission as tracing, PTRACE_MODE_READ), diagnosed here rather
    /// than reported as a failed open. The same checks `patch --dry-run` and a real patch meet.
    /// `journalOnly` (list, forget: they read the journal and at most memory) lets graft's own
    /// process and a zombie through: a zombie's records stay listable and forgettable.
    public static func preflightTarget(_ pid: Int32, allowSelf: Bool = false, journalOnly: Bool = false) throws {
        let status = try refuseUnpatchable(pid, allowSelf: allowSelf || journalOnly, allowZombie: journalOnly)
        if isZombie(status) { return }  // journalOnly: no maps to open
        let fd = open("/proc/\(pid)/maps", O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == EACCES || code == EPERM { throw diagnosePermission(pid, refused: "opening /proc/\(pid)/maps") }
            if code == ENOENT || code == ESRCH { throw GraftError.noSuchProcess(pid: pid) }
        } else {
            close(fd)
        }
        if !journalOnly, let foreign = foreignArchitecture(pid) { throw GraftError.foreignProcess(pid: pid, code: foreign) }
    }

    /// What code the process runs when it is not x86_64 ("32-bit i386", …), from its program's ELF
    /// header (`EI_CLASS`, `e_machine`); nil for x86_64 or when /proc/PID/exe cannot be read.
    static func foreignArchitecture(_ pid: Int32) -> String? {
        let fd = open("/proc/\(pid)/exe", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: 20)
        guard pread(fd, &header, 20, 0) == 20, header[0..<4] == [0x7f, 0x45, 0x4c, 0x46] else { return nil }
        let machine = UInt16(header[18]) | UInt16(header[19]) << 8
        if header[4] == 2 && machine == 62 { return nil }
        let name = [3: "i386", 40: "ARM", 62: "x86_64", 183: "AArch64"][Int(machine)] ?? "ELF machine \(machine)"
        return "\(header[4] == 1 ? "32" : "64")-bit \(name)"
    }

    /// No such process, ourselves (unless `allowSelf`), zombie (returned as it is with
    /// `allowZombie`), kernel thread; returns /proc/PID/status.
    static func refuseUnpatchable(_ pid: Int32, allowSelf: Bool, allowZombie: Bool = false) throws -> [String: String] {
        guard pid > 0, let status = status(pid) else { throw GraftError.noSuchProcess(pid: pid) }
        if pid == getpid() && !allowSelf {
            throw GraftError.permissionDenied(pid: pid, reason: "graft cannot trace its own process")
        }
        if isZombie(status) {
            if allowZombie { return status }
            throw GraftError.zombie(pid: pid)
        }
        if isKernelThread(status, pid: pid) {
            throw GraftError.permissionDenied(pid: pid, reason: "it is a kernel thread, which has no user-space code to patch")
        }
        return status
    }

    static func isZombie(_ status: [String: String]) -> Bool {
        guard let state = status["State"] else { return false }
        return state.hasPrefix("Z") || state.hasPrefix("X")
    }

    /// A kernel thread has no address space (no VmSize line); `Kthread: 1` (Linux 6.x) says so
    /// directly, and kthreadd (PID 2) is the parent of every other one.
    static func isKernelThread(_ status: [String: String], pid: Int32) -> Bool {
        status["VmSize"] == nil && (status["Kthread"] == "1" || status["PPid"] == "2" || pid == 2)
    }

    /// What decides whether graft may trace a process, read from /proc (see `explainPermission`).
    public struct PermissionFacts: Sendable, Equatable {
        public var targetUIDs: [UInt32]          // real, effective, saved, fs
        public var targetGIDs: [UInt32]
        public var targetPermitted: UInt64       // CapPrm of the target
        public var targetMemOwner: UInt32? // owner of /proc/PID/mem: root when the target is not dumpable
        public var tracerUID: UInt32
        public var tracerGID: UInt32
        public var tracerPermitted: UInt64       // CapPrm of graft
        public var tracerEffective: UInt64       // CapEff of graft
        public var yamaScope: Int?               // nil: no Yama on this kernel
        public var tracerIsAncestor: Bool        // Yama scope 1 lets an ancestor trace

        public init(targetUIDs: [UInt32], targetGIDs: [UInt32], targetPermitted: UInt64, targetMemOwner: UInt32?,
                    tracerUID: UInt32, tracerGID: UInt32, tracerPermitted: UInt64, tracerEffective: UInt64,
                    yamaScope: Int?, tracerIsAncestor: Bool) {
            self.targetUIDs = targetUIDs; self.targetGIDs = targetGIDs; self.targetPermitted = targetPermitted
            self.targetMemOwner = targetMemOwner; self.tracerUID = tracerUID; self.tracerGID = tracerGID
            self.tracerPermitted = tracerPermitted; self.tracerEffective = tracerEffective
            self.yamaScope = yamaScope; self.tracerIsAncestor = tracerIsAncestor
        }
    }

    static let capSysPtrace: UInt64 = 1 << 19

    /// The reason the kernel refuses PTRACE_SEIZE, in the order it checks them
    /// (kernel/ptrace.c `__ptrace_may_access`, security/commoncap.c, security/yama): ids, dumpable,
    /// capabilities, then Yama (scope 3 first: nothing else helps there).
    /// `refused` names what the kernel refused, for the fallback reasons ("PTRACE_SEIZE", "opening
    /// /proc/PID/maps"): the same access check guards both.
    public static func explainPermission(_ f: PermissionFacts, refused: String = "PTRACE_SEIZE") -> String {
        let privileged = f.tracerEffective & capSysPtrace != 0
        let uidsMatch = !f.targetUIDs.isEmpty && f.targetUIDs.prefix(3).allSatisfy { $0 == f.tracerUID }
        let gidsMatch = f.targetGIDs.isEmpty || f.targetGIDs.prefix(3).allSatisfy { $0 == f.tracerGID }
        if f.yamaScope == 3 {  // nothing else helps: said first
            return "Yama ptrace_scope is 3: ptrace is disabled on this system until reboot"
        }
        if !privileged, !uidsMatch {
            let owner = f.targetUIDs.first.map { "uid \($0)" } ?? "another user"
            let ids = Set(f.targetUIDs.prefix(3)).count > 1 ? " (its real, effective and saved uids differ: set-uid?)" : ""
            return "it belongs to \(owner)\(ids) and graft runs as uid \(f.tracerUID) without CAP_SYS_PTRACE; run graft as that user or as root"
        }
        if !privileged, !gidsMatch {
            return "its group ids (\(f.targetGIDs.prefix(3).map(String.init).joined(separator: ", "))) differ from graft's gid \(f.tracerGID) (set-gid program?) and graft lacks CAP_SYS_PTRACE; run graft as root"
        }
        if !privileged, let owner = f.targetMemOwner, owner == 0, f.tracerUID != 0 {
            return "the process is not dumpable (set-uid/set-gid, file capabilities, or prctl(PR_SET_DUMPABLE, 0)) and graft lacks CAP_SYS_PTRACE; run graft as root"
        }
        if !privileged, f.targetPermitted & ~f.tracerPermitted != 0 {
            let missing = f.targetPermitted & ~f.tracerPermitted
            return "it holds capabilities graft lacks (CapPrm 0x\(String(missing, radix: 16)) missing) and graft has no CAP_SYS_PTRACE; run graft with CAP_SYS_PTRACE (e.g. as full root)"
        }
        if let scope = f.yamaScope {
            switch scope {
            case 1 where !privileged && !f.tracerIsAncestor:
                return "Yama ptrace_scope is 1 (only a parent may trace its descendants); run graft as root, grant it CAP_SYS_PTRACE, start the target under graft (`-- COMMAND`), or set /proc/sys/kernel/yama/ptrace_scope to 0"
            case 2 where !privileged:
                return "Yama ptrace_scope is 2 (admin only); run graft with CAP_SYS_PTRACE (e.g. as root)"
            default: break
            }
        }
        if !privileged {
            return "the kernel refused \(refused) (EPERM) and graft lacks CAP_SYS_PTRACE; run graft as root"
        }
        return "the kernel refused \(refused) (EPERM) although graft has CAP_SYS_PTRACE; check LSM policy (AppArmor/SELinux) and seccomp"
    }

    /// Why the kernel answered EPERM to PTRACE_SEIZE (or to opening /proc/PID/mem or maps).
    public static func diagnosePermission(_ pid: Int32, refused: String = "PTRACE_SEIZE",
                                          yamaScopePath: String = "/proc/sys/kernel/yama/ptrace_scope") -> GraftError {
        guard let status = status(pid) else {
            // /proc mounted with hidepid=1: the directory is there, its files are not readable.
            return access("/proc/\(pid)", F_OK) == 0
                ? .permissionDenied(pid: pid, reason: "graft cannot read /proc/\(pid)/status (/proc mounted with hidepid?); run graft as root or as the process's user")
                : .noSuchProcess(pid: pid)
        }
        if let tracer = status["TracerPid"].flatMap({ Int32($0) }), tracer != 0 {
            let process = threadGroup(of: tracer)
            return .alreadyTraced(pid: pid, tracer: process, tracerName: commandName(process))
        }
        func ids(_ key: String) -> [UInt32] {
            (status[key] ?? "").split(whereSeparator: { $0 == "\t" || $0 == " " }).compactMap { UInt32($0) }
        }
        func caps(_ fields: [String: String]?, _ key: String) -> UInt64 { fields?[key].flatMap { UInt64($0, radix: 16) } ?? 0 }
        let mine = self.status(getpid())
        var info = stat()
        let owner: UInt32? = stat("/proc/\(pid)/mem", &info) == 0 ? info.st_uid : nil  // root-owned when not dumpable
        let facts = PermissionFacts(
            targetUIDs: ids("Uid"), targetGIDs: ids("Gid"), targetPermitted: caps(status, "CapPrm"),
            targetMemOwner: owner, tracerUID: getuid(), tracerGID: getgid(),  // PTRACE_MODE_REALCREDS
            tracerPermitted: caps(mine, "CapPrm"), tracerEffective: caps(mine, "CapEff"),
            yamaScope: readFile(yamaScopePath).flatMap { Int($0.trimmingCharacters(in: "\n ")) },
            tracerIsAncestor: isAncestor(getpid(), of: pid))
        return .permissionDenied(pid: pid, reason: explainPermission(facts, refused: refused))
    }

    /// Whether `ancestor` is `pid`'s parent, grandparent, … (Yama scope 1's rule).
    static func isAncestor(_ ancestor: Int32, of pid: Int32) -> Bool {
        var current = pid
        for _ in 0..<64 {
            guard let parent = status(current)?["PPid"].flatMap({ Int32($0) }), parent > 0 else { return false }
            if parent == ancestor { return true }
            current = parent
        }
        return false
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var start = startIndex, end = endIndex
        while start < end, set.contains(self[start]) { start = index(after: start) }
        while end > start, set.contains(self[index(before: end)]) { end = index(before: end) }
        return String(self[start..<end])
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String { self[...].trimmingCharacters(in: set) }
}

/// Reads another process's memory through /proc/PID/mem without stopping it (needs the same
/// permission as ptrace attach). Used to plan a patch before the stop window opens.
public enum ProcessMemory {
    public static func read(pid: Int32, at address: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw GraftError.noSuchProcess(pid: pid) }
            if errno == EACCES || errno == EPERM { throw ProcFS.diagnosePermission(pid, refused: "opening /proc/\(pid)/mem") }
            throw GraftError.systemCall(name: "open", errno: errno, context: "/proc/\(pid)/mem")
        }
        defer { close(fd) }
        return try readFully(fd, pid: pid, at: address, count: count, gone: { .noSuchProcess(pid: pid) })
    }

    /// `count` bytes at `address` from an open /proc/PID/mem: unmapped bytes (EIO/EFAULT or a short
    /// read) are `addressNotMapped`, a vanished process is `gone()`.
    static func readFully(_ fd: Int32, pid: Int32, at address: UInt64, count: Int, gone: () -> GraftError) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { buffer in
                pread(fd, buffer.baseAddress! + done, count - done, off_t(Int64(bitPattern: address &+ UInt64(done))))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EIO || errno == EFAULT { throw GraftError.addressNotMapped(address: address &+ UInt64(done)) }
                if errno == ESRCH { throw gone() }
                throw GraftError.systemCall(name: "pread", errno: errno, context: "/proc/\(pid)/mem at \(hex(address))")
            }
            if n == 0 { throw GraftError.addressNotMapped(address: address &+ UInt64(done)) }
            done += n
        }
        return out
    }
}
