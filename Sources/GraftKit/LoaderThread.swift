import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// The functions of the target's C library a loader thread needs, or nil when it has none (a static
/// program, Go): then graft maps a self-contained library itself (`SelfContainedLoader`).
struct LoaderFunctions: Sendable {
    enum Flavor: String, Sendable {
        /// glibc ≥ 2.34: dlopen, dlerror, dlclose and pthread_* in libc.so.6.
        case glibc
        /// Older glibc: dlopen in libdl.so.2 when the program loaded it, else libc's private
        /// `__libc_dlopen_mode`/`__libc_dlclose` (no dlerror); pthread_* in libpthread.so.0.
        case olderGlibc = "glibc<2.34"
        /// musl: everything in its one libc (which is also the dynamic loader).
        case musl
    }
    let flavor: Flavor
    /// `dlopen(path, mode)` or `__libc_dlopen_mode(path, mode)`.
    let open: UInt64
    let openName: String
    /// The mode for `open`: RTLD_NOW, plus `__RTLD_DLOPEN` for `__libc_dlopen_mode`.
    let openMode: UInt64
    let close: UInt64
    let closeName: String
    let error: UInt64?
    let pthreadCreate: UInt64?
    let pthreadDetach: UInt64?
    let pthreadSelf: UInt64?
    /// The module that holds `open` (for messages).
    let module: String

    static func find(in index: SymbolIndex) -> LoaderFunctions? {
        func modules(_ prefixes: [String]) -> [LoadedModule] {
            index.modules.filter { module in prefixes.contains { module.name.hasPrefix($0) } && module.hasExecutableMapping }
        }
        func address(_ name: String, in candidates: [LoadedModule]) -> (UInt64, LoadedModule)? {
            for module in candidates {
                guard let elf = try? module.elf(), let symbol = elf.definedSymbols(named: name).first(where: { $0.kind == .function && $0.isGlobal }) else { continue }
                return (module.runtimeAddress(symbol), module)
            }
            return nil
        }
        // musl's one libc is also its loader: /lib/ld-musl-x86_64.so.1, which Debian links to
        // /usr/lib/x86_64-linux-musl/libc.so (maps shows the target of the link).
        let musl = index.modules.filter { module in
            module.hasExecutableMapping && (module.name.hasPrefix("ld-musl-") || module.name.hasPrefix("libc.musl-")
                                            || (module.name.hasPrefix("libc.so") && module.path.contains("musl")))
        }
        if let open = address("dlopen", in: musl) {
            return LoaderFunctions(flavor: .musl, open: open.0, openName: "dlopen", openMode: 2,
                                   close: address("dlclose", in: musl)?.0 ?? 0, closeName: "dlclose",
                                   error: address("dlerror", in: musl)?.0, pthreadCreate: address("pthread_create", in: musl)?.0,
                                   pthreadDetach: address("pthread_detach", in: musl)?.0, pthreadSelf: address("pthread_self", in: musl)?.0,
                                   module: open.1.name)
        }
        let libc = modules(["libc.so", "libc-2."]).filter { !$0.path.contains("musl") }
        let threads = libc + modules(["libpthread.so", "libpthread-"])
        let pthreads = (address("pthread_create", in: threads)?.0, address("pthread_detach", in: threads)?.0, address("pthread_self", in: threads)?.0)
        if let open = address("dlopen", in: libc), let close = address("dlclose", in: libc) {
            return LoaderFunctions(flavor: .glibc, open: open.0, openName: "dlopen", openMode: 2, close: close.0, closeName: "dlclose",
                                   error: address("dlerror", in: libc)?.0, pthreadCreate: pthreads.0, pthreadDetach: pthreads.1,
                                   pthreadSelf: pthreads.2, module: open.1.name)
        }
        let libdl = modules(["libdl.so", "libdl-"])
        if let open = address("dlopen", in: libdl), let close = address("dlclose", in: libdl) {
            return LoaderFunctions(flavor: .olderGlibc, open: open.0, openName: "dlopen", openMode: 2, close: close.0, closeName: "dlclose",
                                   error: address("dlerror", in: libdl)?.0, pthreadCreate: pthreads.0, pthreadDetach: pthreads.1,
                                   pthreadSelf: pthreads.2, module: open.1.name)
        }
        if let open = address("__libc_dlopen_mode", in: libc), let close = address("__libc_dlclose", in: libc) {
            return LoaderFunctions(flavor: .olderGlibc, open: open.0, openName: "__libc_dlopen_mode", openMode: 2 | 0x8000_0000,
                                   close: close.0, closeName: "__libc_dlclose", error: nil, pthreadCreate: pthreads.0,
                                   pthreadDetach: pthreads.1, pthreadSelf: pthreads.2, module: open.1.name)
        }
        return nil
    }

    /// A fresh thread can be created for the call (else the call runs on a stopped thread of the
    /// target, with the deadlock risk that brings: older glibc programs without libpthread).
    var canCreateThread: Bool { pthreadCreate != nil && pthreadDetach != nil && pthreadSelf != nil }
}

/// A call of the target's dynamic loader (`dlopen`, `dlclose`) made on a *fresh thread* the target
/// creates for it — frida-core's design. A stopped thread may hold the malloc arena lock or the
/// loader's own lock; `dlopen` run on it would wait for itself for ever. So the stopped thread only
/// calls `pthread_create` (a remote call: no lock a stopped thread can hold is taken on that path
/// but the stack cache's, held only inside pthread_create/exit), graft lets the whole process run,
/// and the new thread calls the loader while every other thread runs too, and can release what it
/// holds. The new thread detaches itself, stores the result and `dlerror()`'s message in a block
/// graft reads through /proc/PID/mem, sets a done flag and returns (its thread ends).
///
/// Memory: two anonymous pages, the start routine (`stub`, r-x) and the block (rw-), never one page
/// both writable and executable. Freed once the thread has gone (its last instructions are in the
/// code page).
enum LoaderThread {
    /// The start routine, assembled from TestTargets/loader_stub.S (LoaderStubTests checks the bytes).
    static let stub: [UInt8] = [
        0x53, 0x48, 0x89, 0xfb, 0xb8, 0xba, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x89,
        0x43, 0x50, 0x48, 0x8b, 0x43, 0x20, 0x48, 0x85, 0xc0, 0x74, 0x09, 0xff,
        0x53, 0x28, 0x48, 0x89, 0xc7, 0xff, 0x53, 0x20, 0x48, 0x8b, 0x7b, 0x08,
        0x48, 0x8b, 0x73, 0x10, 0xff, 0x13, 0x48, 0x89, 0x43, 0x30, 0x48, 0x8b,
        0x43, 0x18, 0x48, 0x85, 0xc0, 0x74, 0x2f, 0xff, 0xd0, 0x48, 0x89, 0x43,
        0x38, 0x48, 0x85, 0xc0, 0x74, 0x24, 0x48, 0x89, 0xc6, 0x48, 0x8d, 0xbb,
        0x80, 0x00, 0x00, 0x00, 0xb9, 0xff, 0x03, 0x00, 0x00, 0x8a, 0x06, 0x88,
        0x07, 0x84, 0xc0, 0x74, 0x0d, 0x48, 0xff, 0xc6, 0x48, 0xff, 0xc7, 0xff,
        0xc9, 0x75, 0xee, 0xc6, 0x07, 0x00, 0xc7, 0x43, 0x40, 0x01, 0x00, 0x00,
        0x00, 0x31, 0xc0, 0x5b, 0xc3,
    ]

    /// Offsets in the data page (see loader_stub.S).
    enum Block {
        static let function = 0, argument0 = 8, argument1 = 16, dlerror = 24, detach = 32, pthreadSelf = 40
        static let result = 48, errorPointer = 56, done = 64, threadSlot = 72, tid = 80, message = 128, messageSize = 1024
        /// Strings graft passes (the library's path): from here to the end of the page.
        static let strings = 2048
    }
    static let pageSize: UInt64 = 4096

    /// A call under way: where its pages are and which thread runs it.
    struct Started: Sendable {
        let code: UInt64
        var data: UInt64 { code + LoaderThread.pageSize }
        let name: String
        /// Set when the call ran synchronously (no pthread_create).
        var finished: (result: UInt64, message: String?)?
    }

    struct Finished: Sendable {
        /// The loader thread (it wrote its id first thing); nil when the call ran on a stopped thread.
        var tid: Int32?
        let result: UInt64
        /// `dlerror()`'s message, when there was one.
        let message: String?
        /// The pages could not be freed (the thread had not ended): left mapped, 8 KiB.
        var leftPages: Bool = false
    }

    /// Maps the pages, writes the start routine and the block, and starts the thread. Runs in a
    /// stop window; the call itself runs once the process does. `string` is given the address of
    /// the block's string area (it may use it as scratch first) and returns the bytes to put there
    /// (NUL included); with `argument0` 0 the call's first argument is that string.
    static func start(_ function: UInt64, name: String, argument0: UInt64, argument1: UInt64,
                      functions: LoaderFunctions, tracee: Tracee, thread: Int32,
                      string: ((UInt64) throws -> [UInt8])? = nil) throws -> Started {
        // Two pages: the code read-execute (graft writes the stub through /proc/PID/mem, which may
        // write any page), then the data page read-write in its place. Never a writable and
        // executable page, and no mprotect adding execute: hardened processes (systemd's
        // MemoryDenyWriteExecute, PR_SET_MDWE) allow both calls.
        let flags = UInt64(MAP_PRIVATE | MAP_ANONYMOUS)
        let code = try tracee.remoteSyscall(9, [0, 2 * pageSize, UInt64(PROT_READ | PROT_EXEC), flags, UInt64.max, 0],
                                            name: "mmap", on: thread)
        do {
            let data = code + pageSize
            let fixed = flags | UInt64(MAP_FIXED)
            _ = try tracee.remoteSyscall(9, [data, pageSize, UInt64(PROT_READ | PROT_WRITE), fixed, UInt64.max, 0], name: "mmap", on: thread)
            let string = try string?(data + UInt64(Block.strings))
            guard (string?.count ?? 0) <= Int(pageSize) - Block.strings else {
                throw GraftError.usage("the path is too long for graft's loader block (\(string?.count ?? 0) bytes; at most \(Int(pageSize) - Block.strings))")
            }
            var block = [UInt8](repeating: 0, count: Int(pageSize))
            func put(_ value: UInt64, at offset: Int) { block.replaceSubrange(offset..<offset + 8, with: littleEndian(value)) }
            put(function, at: Block.function)
            put(string != nil && argument0 == 0 ? data + UInt64(Block.strings) : argument0, at: Block.argument0)
            put(argument1, at: Block.argument1)
            put(functions.error ?? 0, at: Block.dlerror)
            let detached = functions.canCreateThread
            put(detached ? functions.pthreadDetach! : 0, at: Block.detach)
            put(detached ? functions.pthreadSelf! : 0, at: Block.pthreadSelf)
            if let string { block.replaceSubrange(Block.strings..<Block.strings + string.count, with: string) }
            try tracee.writeMemory(at: code, bytes: stub)
            try tracee.writeMemory(at: data, bytes: block)
            guard detached, let create = functions.pthreadCreate else {
                // No pthread_create: call on this stopped thread (bounded; documented risk).
                _ = try tracee.remoteCall(code, [data], name: name, on: thread, timeout: 10)
                let finished = try read(pid: tracee.pid, data: data)
                return Started(code: code, name: name, finished: (finished.result, finished.message))
            }
            let status = try tracee.remoteCall(create, [data + UInt64(Block.threadSlot), 0, code, data], name: "pthread_create", on: thread)
            if status != 0 {
                throw GraftError.remoteCallFailed(name: "pthread_create", pid: tracee.pid, tid: thread,
                                                  reason: "it returned \(Errno.describe(Int32(truncatingIfNeeded: status))), so no loader thread could start")
            }
            return Started(code: code, name: name)
        } catch {
            if tracee.processDeath() == nil {
                _ = try? tracee.remoteSyscall(11, [code, 2 * pageSize], name: "munmap", on: thread)
            }
            throw error
        }
    }

    /// Waits, with the process running, for the thread's done flag (at most `timeout` seconds).
    static func wait(_ started: Started, pid: Int32, timeout: Double) throws -> Finished {
        if let finished = started.finished { return Finished(tid: nil, result: finished.result, message: finished.message) }
        let deadline = graft_monotonic_ns() &+ UInt64(timeout * 1e9)
        var pause: UInt32 = 50
        while true {
            let flag = try ProcessMemory.read(pid: pid, at: started.data + UInt64(Block.done), count: 4)
            if flag.first == 1 { return try read(pid: pid, data: started.data) }
            if graft_monotonic_ns() >= deadline {
                let tid = try? ProcessMemory.read(pid: pid, at: started.data + UInt64(Block.tid), count: 4)
                let loader = tid.map { Int32(bitPattern: UInt32($0[0]) | UInt32($0[1]) << 8 | UInt32($0[2]) << 16 | UInt32($0[3]) << 24) } ?? 0
                let who = loader > 0 ? "thread \(loader)" : "the loader thread"
                throw GraftError.remoteCallFailed(name: started.name, pid: pid, tid: loader > 0 ? loader : pid,
                                                  reason: "\(who) has not finished it after \(timeout) s (a library constructor that blocks, or a lock held for ever?); graft left it running and recorded nothing — `graft list -p \(pid)` after it finishes shows what is mapped")
            }
            usleep(pause)
            pause = min(pause * 2, 2_000)
        }
    }

    /// Waits (≤ 2 s) for the loader thread to end: its last instructions run from the code page.
    /// True when it has ended (or never existed).
    static func waitForThreadEnd(_ finished: Finished, pid: Int32) -> Bool {
        guard let tid = finished.tid else { return true }
        let deadline = graft_monotonic_ns() &+ 2_000_000_000
        var pause: UInt32 = 50
        while access("/proc/\(pid)/task/\(tid)", F_OK) == 0 {
            if graft_monotonic_ns() >= deadline { return false }
            usleep(pause)
            pause = min(pause * 2, 5_000)
        }
        return true
    }

    /// Frees the pages (in a stop window).
    static func free(_ started: Started, tracee: Tracee, thread: Int32) throws {
        _ = try tracee.remoteSyscall(11, [started.code, 2 * pageSize], name: "munmap", on: thread)
    }

    private static func read(pid: Int32, data: UInt64) throws -> Finished {
        let block = try ProcessMemory.read(pid: pid, at: data, count: Block.message + Block.messageSize)
        func word(_ offset: Int) -> UInt64 { readLittleEndianUInt64(block, at: offset) }
        var message: String?
        if word(Block.errorPointer) != 0 {
            let bytes = block[Block.message..<(Block.message + Block.messageSize)].prefix { $0 != 0 }
            message = String(decoding: bytes, as: UTF8.self)
        }
        let tid = Int32(truncatingIfNeeded: word(Block.tid) & 0xffff_ffff)
        return Finished(tid: tid > 0 ? tid : nil, result: word(Block.result), message: message)
    }
}
