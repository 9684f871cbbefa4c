import CGraftShim
import GraftCore
import GraftELF
import GraftPtrace
import Glibc

/// What `Graft.inject` did.
public struct InjectOutcome: Sendable {
    public let record: LibraryRecord
    /// The journal already had it loaded in this process instance (memory checked): nothing done.
    public let alreadyLoaded: Bool
    /// Handed over as a memfd (the target sees another file, or none, at that path).
    public let viaMemfd: Bool
    /// Who loaded it: `dlopen` (glibc ≥ 2.34, musl), `__libc_dlopen_mode`, or `graft` (mapped by graft).
    public let loadedBy: String
    /// The target's thread that ran the loader (nil: graft mapped it, or it was already loaded).
    public let loaderThread: Int32?
    /// Instructions the borrowed thread was single-stepped to leave the C library before it called
    /// pthread_create (0 when it was asleep in a system call or in the program's own code).
    public var hijackSteps: Int = 0
    /// The loader's pages and memfd still to free (`loadLibrary(cleanupLater:)`): the caller runs it
    /// in its next borrowed-thread window.
    var pendingCleanup: LoaderCleanup?
    /// The stop windows (the load itself runs with the process running).
    public let stopWindowNanoseconds: UInt64
    /// Wall time of the load, first attach to last detach.
    public let elapsedNanoseconds: UInt64
}

/// What a load leaves to free once its loader thread has gone: the two pages, and the memfd (the
/// library's mapping keeps the file).
struct LoaderCleanup: Sendable {
    let call: LoaderThread.Started
    let finished: LoaderThread.Finished
    let memfd: UInt64?

    /// Closes the memfd and frees the pages (unless the thread is still there after 2 s: then the
    /// 8 KiB stay). Failures are ignored: at worst an unused page is left.
    func run(tracee: Tracee, thread: Int32) {
        if let memfd { _ = try? tracee.remoteSyscall(3, [memfd], name: "close", on: thread) }
        if LoaderThread.waitForThreadEnd(finished, pid: tracee.pid) {
            try? LoaderThread.free(call, tracee: tracee, thread: thread)
        }
    }
}

/// The library file graft was given, checked before anything is written.
struct LibraryFile {
    /// Absolute, symbolic links resolved.
    let path: String
    let elf: ELFFile
    var fileName: String { String(path.split(separator: "/").last ?? "") }

    /// Opens and checks `given` against the target: a 64-bit little-endian x86_64 shared object
    /// (ET_DYN), like the target's executable.
    static func open(_ given: String, pid: Int32) throws -> LibraryFile {
        guard let resolved = realpath(given, nil) else {
            throw GraftError.libraryRefused(path: given, reason: "it cannot be opened (\(Errno.describe(errno)))")
        }
        let path = String(cString: resolved)
        Glibc.free(resolved)
        let elf: ELFFile
        do { elf = try ELFFile(path: path) } catch let error as GraftError {
            if case .elfFormat(_, let reason) = error { throw GraftError.libraryRefused(path: path, reason: reason) }
            throw GraftError.libraryRefused(path: path, reason: error.description)
        }
        guard elf.isPositionIndependent else {
            throw GraftError.libraryRefused(path: path, reason: "it is not a shared object (ELF type is not ET_DYN); build it with -shared -fPIC")
        }
        if let dynamic = try? elf.dynamicInfo(), let interpreter = dynamic.interpreter, dynamic.soname == nil {
            throw GraftError.libraryRefused(path: path, reason: "it is a program (a position-independent executable asking for \(interpreter)), not a library; build it with -shared -fPIC")
        }
        guard elf.machine == 62 else {
            throw GraftError.libraryRefused(path: path, reason: "it is built for \(machineName(elf.machine)), and process \(pid) runs x86_64 code")
        }
        if let target = try? ELFFile(path: "/proc/\(pid)/exe"), target.machine != elf.machine {
            throw GraftError.libraryRefused(path: path, reason: "it is built for x86_64, and process \(pid) runs \(machineName(target.machine)) code")
        }
        return LibraryFile(path: path, elf: elf)
    }

    static func machineName(_ machine: UInt16) -> String {
        switch machine {
        case 3: return "i386"
        case 40: return "ARM (32-bit)"
        case 62: return "x86_64"
        case 183: return "AArch64"
        case 243: return "RISC-V"
        default: return "ELF machine \(machine)"
        }
    }

    /// The target opens the very same file at `path` (same device and inode through
    /// /proc/PID/root): then the loader is given the path, else the bytes through a memfd.
    func sameFileInTarget(pid: Int32) -> Bool {
        var mine = stat(), theirs = stat()
        guard stat(path, &mine) == 0, stat("/proc/\(pid)/root\(path)", &theirs) == 0 else { return false }
        return mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino
    }
}

/// The system calls a loader thread makes (pthread_create, dlopen, the thread's exit), with the
/// arguments that matter to a filter (mmap and mprotect: with and without PROT_EXEC, of a file and
/// anonymous): a seccomp filter that kills or traps any of them is read first and refused by name.
let loaderSystemCalls: [(number: Int, name: String, arguments: [[UInt64]])] = {
    let zero: [[UInt64]] = [[0, 0, 0, 0, 0, 0]]
    let mmaps: [[UInt64]] = [1, 3, 5].flatMap { protection in
        [[0, 0x1000, protection, 0x802, 3, 0], [0, 0x1000, protection, 0x22, UInt64.max, 0], [0, 0x1000, protection, 0x812, 3, 0]]
    }
    let mprotects: [[UInt64]] = [0, 1, 3, 5].map { [0x1000, 0x1000, $0, 0, 0, 0] }
    return [(9, "mmap", mmaps), (10, "mprotect", mprotects)] + [
        (11, "munmap"), (0, "read"), (17, "pread64"), (3, "close"), (257, "openat"), (262, "newfstatat"), (5, "fstat"),
        (14, "rt_sigprocmask"), (435, "clone3"), (56, "clone"), (202, "futex"), (273, "set_robust_list"), (334, "rseq"),
        (28, "madvise"), (60, "exit"), (186, "gettid"), (319, "memfd_create"),
    ].map { ($0.0, $0.1, zero) }
}()

extension Graft {
    // MARK: - Inject

    /// Loads the library at `path` into process `pid` (constructors run), unless this process
    /// instance already has it from graft; records it in the journal.
    public func inject(pid: Int32, path: String) throws -> InjectOutcome {
        try ProcFS.preflightTarget(pid)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            let outcome = try loadLibrary(instance: instance, contents: &contents, path: path)
            if !outcome.alreadyLoaded { try journal.save(contents, for: instance) }
            return outcome
        }
    }

    /// The library's record when the journal says graft loaded it into this instance and memory
    /// agrees (its ELF header is still at the recorded base), else nil.
    static func loadedLibrary(_ file: LibraryFile, in contents: JournalContents, pid: Int32) -> LibraryRecord? {
        guard let record = (contents.libraries ?? []).last(where: { $0.state == .loaded && ($0.buildID != nil ? $0.buildID == file.elf.buildID : $0.path == file.path) }),
              let header = try? ProcessMemory.read(pid: pid, at: record.baseValue, count: 64),
              let fileHeader = try? FileIO.readAll(path: file.path).prefix(64), header[...] == fileHeader else { return nil }
        return record
    }

    /// Loads `path` (or finds it loaded) and appends its record to `contents` (not saved).
    func loadLibrary(instance: ProcessInstance, contents: inout JournalContents, path: String, cleanupLater: Bool = false) throws -> InjectOutcome {
        let pid = instance.pid
        let started = graft_monotonic_ns()
        let file = try LibraryFile.open(path, pid: pid)
        if let record = Graft.loadedLibrary(file, in: contents, pid: pid) {
            return InjectOutcome(record: record, alreadyLoaded: true, viaMemfd: record.mappedAs.hasPrefix("/memfd:"),
                                 loadedBy: record.loader, loaderThread: nil, stopWindowNanoseconds: 0, elapsedNanoseconds: graft_monotonic_ns() - started)
        }
        let index = try SymbolIndex(pid: pid)
        guard let functions = LoaderFunctions.find(in: index) else {
            if ProcFS.status(pid) == nil { throw GraftError.noSuchProcess(pid: pid) }
            return try mapSelfContained(file, instance: instance, contents: &contents, index: index, started: started)
        }
        let viaMemfd = !file.sameFileInTarget(pid: pid)
        var window: UInt64 = 0
        var memfd: UInt64?

        // One thread borrowed (the others run): the pages, the memfd, pthread_create. The load runs
        // on the new thread.
        let (call, firstWindow, steps) = try withHijackedThread(pid, index: index) { tracee, thread -> LoaderThread.Started in
            try Graft.checkSeccomp(tracee: tracee, thread: thread, file: file, memfd: viaMemfd)
            return try LoaderThread.start(functions.open, name: functions.openName, argument0: 0, argument1: functions.openMode,
                                          functions: functions, tracee: tracee, thread: thread) { strings in
                guard viaMemfd else { return Array(file.path.utf8) + [0] }
                let fd = try Graft.handOver(file, tracee: tracee, thread: thread, scratch: strings)
                memfd = fd
                return Array("/proc/self/fd/\(fd)".utf8) + [0]
            }
        }
        window += firstWindow
        // If it does not finish in time, the thread still runs in its pages: they stay.
        let finished = try LoaderThread.wait(call, pid: pid, timeout: 10)
        // Then: free the pages once the thread has gone, close the memfd (the mapping keeps it) —
        // now, or (`cleanupLater`, a patch that borrows a thread next anyway) in that next window.
        let cleanup = LoaderCleanup(call: call, finished: finished, memfd: memfd)
        var pending: LoaderCleanup?
        if cleanupLater && finished.result != 0 {
            pending = cleanup
        } else if let (_, secondWindow, _) = try? withHijackedThread(pid, index: index, { tracee, thread in
            cleanup.run(tracee: tracee, thread: thread)
        }) {
            window += secondWindow
        }
        guard finished.result != 0 else {
            let message = finished.message ?? "\(functions.openName) returned NULL (this loader gives no message)"
            throw GraftError.libraryLoadFailed(path: file.path, pid: pid, message: message)
        }
        // Where it went: the mapping of this very file (build-id checked), after the load.
        let mappedAs = viaMemfd ? "/memfd:\(file.fileName)" : file.path
        let after = try SymbolIndex(pid: pid)
        let candidates = after.modules.filter { $0.path == mappedAs || (!viaMemfd && $0.path.hasSuffix(file.path)) }
        guard let module = candidates.first(where: { (try? $0.elf().buildID) == file.elf.buildID && (try? $0.elf()) != nil })
                ?? candidates.last else {
            throw GraftError.libraryLoadFailed(path: file.path, pid: pid, message: "\(functions.openName) returned a handle, but no mapping of the file appears in /proc/\(pid)/maps")
        }
        // The end of its last segment (.bss is an anonymous mapping maps does not name after the file).
        let segmentsEnd = file.elf.loadSegments.map { ($0.vaddr &+ $0.memsz &+ 0xfff) & ~0xfff }.max().map { module.loadBias &+ $0 } ?? module.end
        let record = LibraryRecord(path: file.path, buildID: file.elf.buildID, mappedAs: module.path, name: module.name,
                                   base: hex(module.start), end: hex(max(module.end, segmentsEnd)), loader: "dlopen", handle: hex(finished.result),
                                   state: .loaded, loadedAt: isoTimestamp(), unloadedAt: nil)
        contents.libraries = (contents.libraries ?? []) + [record]
        var outcome = InjectOutcome(record: record, alreadyLoaded: false, viaMemfd: viaMemfd, loadedBy: functions.openName,
                                    loaderThread: finished.tid, hijackSteps: steps, stopWindowNanoseconds: window, elapsedNanoseconds: graft_monotonic_ns() - started)
        outcome.pendingCleanup = pending
        return outcome
    }

    /// Refuses, by name, a system call of the loader thread the thread's seccomp filter would kill,
    /// trap or hand to a supervisor (an errno answer only makes the load fail, with its message).
    static func checkSeccomp(tracee: Tracee, thread: Int32, file: LibraryFile, memfd: Bool) throws {
        guard let status = ProcFS.readFile("/proc/\(tracee.pid)/task/\(thread)/status"),
              status.contains("\nSeccomp:\t2") || status.contains("\nSeccomp:\t1") else { return }
        for call in loaderSystemCalls where memfd || call.number != 319 {
            for arguments in call.arguments {
                switch try tracee.seccompVerdict(of: thread, number: call.number, name: call.name, instructionPointer: 0, arguments: arguments) {
                case .allow, .log, .errno, .trace: continue
                case let verdict:
                    throw GraftError.libraryRefused(path: file.path, reason: "loading it makes the system call \(call.name), and the seccomp filter of process \(tracee.pid) would \(verdict)")
                }
            }
        }
    }

    /// Creates a memfd in the target named after the file, writes the file into it through
    /// /proc/PID/fd/N, and returns N.
    static func handOver(_ file: LibraryFile, tracee: Tracee, thread: Int32, scratch: UInt64) throws -> UInt64 {
        try tracee.writeMemory(at: scratch, bytes: Array(file.fileName.utf8.prefix(200)) + [0])
        let fd = try tracee.remoteSyscall(319, [scratch, 1 /* MFD_CLOEXEC */], name: "memfd_create", on: thread)
        let proc = "/proc/\(tracee.pid)/fd/\(fd)"
        do {
            try FileIO.writeAll(try FileIO.readAll(path: file.path), to: proc)
        } catch {
            _ = try? tracee.remoteSyscall(3, [fd], name: "close", on: thread)
            throw GraftError.libraryRefused(path: file.path, reason: "graft could not write it into the process's memfd \(proc): \(error)")
        }
        return fd
    }

    /// A target with no dynamic loader (static C, Go): graft maps a self-contained library itself
    /// (`SelfContainedLoader`), every thread stopped. Its initializers run (remote calls), except in
    /// a Go program, whose threads belong to Go's scheduler, or with `runInitializers` false.
    func mapSelfContained(_ file: LibraryFile, instance: ProcessInstance, contents: inout JournalContents, index: SymbolIndex,
                          started: UInt64) throws -> InjectOutcome {
        let pid = instance.pid
        let resolve = SelfContainedLoader.targetResolver(index: index)
        try SelfContainedLoader.check(file.elf, resolve: resolve)
        let isGo = (index.modules.first.flatMap { try? $0.elf() })?.isGoProgram == true
        let runInitializers = !isGo && injectInitializers
        if let signal = cancellation?() { throw GraftError.interrupted(signal: signal) }
        let (mapped, _, window) = try withStoppedProcess(pid) { tracee -> (MappedLibrary, Int) in
            (try SelfContainedLoader.map(file.elf, into: tracee, resolve: resolve, runInitializers: runInitializers), 0)
        }
        let record = LibraryRecord(path: file.path, buildID: file.elf.buildID, mappedAs: "", name: file.fileName,
                                   base: hex(mapped.start), end: hex(mapped.end), loader: "graft", handle: nil,
                                   loadBias: hex(mapped.base), state: .loaded, loadedAt: isoTimestamp(), unloadedAt: nil)
        contents.libraries = (contents.libraries ?? []) + [record]
        return InjectOutcome(record: record, alreadyLoaded: false, viaMemfd: false,
                             loadedBy: runInitializers ? "graft (mapped, initializers run)" : isGo ? "graft (mapped; initializers not run in a Go program)" : "graft (mapped, initializers not run)",
                             loaderThread: nil, stopWindowNanoseconds: window, elapsedNanoseconds: graft_monotonic_ns() - started)
    }

    /// The process's symbol index with the libraries graft mapped itself (anonymous memory maps
    /// cannot name) added as modules, where memory still holds their first bytes.
    func symbolIndex(pid: Int32, contents: JournalContents) throws -> SymbolIndex {
        try SymbolIndex(pid: pid, adding: Graft.graftMappedModules(pid: pid, contents: contents))
    }

    /// The same from the journal as it is (read without its lock: for reading symbols only).
    static func symbolIndex(pid: Int32, journal: Journal) throws -> SymbolIndex {
        let contents = (try? ProcessInstance.current(pid)).flatMap { try? journal.load($0) }
        return try SymbolIndex(pid: pid, adding: contents.map { graftMappedModules(pid: pid, contents: $0) } ?? [])
    }

    /// The libraries graft mapped itself, as modules: the file's segments where the journal's load
    /// bias puts them, each checked against memory (its first 64 bytes).
    static func graftMappedModules(pid: Int32, contents: JournalContents) -> [LoadedModule] {
        var extra: [LoadedModule] = []
        for record in contents.libraries ?? [] where record.state == .loaded && record.loader == "graft" {
            guard let bias = record.loadBias.flatMap(hexValue),
                  let elf = try? ELFFileCache.open(record.path), elf.buildID == record.buildID,
                  let first = elf.loadSegments.min(by: { $0.vaddr < $1.vaddr }),
                  let fileBytes = elf.bytes(atVirtualAddress: first.vaddr, count: 64),
                  (try? ProcessMemory.read(pid: pid, at: bias &+ first.vaddr, count: 64)) == fileBytes else { continue }
            let mappings = elf.loadSegments.map { segment in
                Mapping(start: (bias &+ segment.vaddr) & ~0xfff, end: (bias &+ segment.vaddr &+ segment.memsz &+ 0xfff) & ~0xfff,
                        readable: segment.readable, writable: segment.writable, executable: segment.executable, isPrivate: true,
                        offset: segment.offset & ~0xfff, device: "00:00", inode: 1, path: record.path)
            }
            extra.append(LoadedModule(path: record.path, mappings: mappings, root: "/", pid: nil))
        }
        return extra
    }
}
