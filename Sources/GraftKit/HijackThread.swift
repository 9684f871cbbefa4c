import CGraftShim
import GraftCore
import GraftELF
import GraftPtrace
import Glibc

/// The one thread a loader call borrows (to call `pthread_create`, `mmap`, `memfd_create`), chosen so
/// that it holds no lock those need, while every other thread of the target runs on
/// (`Tracee.attach(pid:onlyThread:)`): a lock another thread holds is released as usual.
///
/// `pthread_create` allocates the new thread's TLS with `calloc` and takes the loader's TLS lock: a
/// borrowed thread stopped *inside* `malloc` (holding the arena lock) or inside the loader would wait
/// for itself. So graft prefers a thread asleep in a blocking system call (`nanosleep`, `epoll_wait`,
/// `read`, a futex wait…: none of those is made with the malloc lock held), the main thread first;
/// failing that it takes the main thread and single-steps it out of the C library and the dynamic
/// loader (at most `stepLimit` instructions) — once
/// its pc is in the program's own code it holds no libc-internal lock.
enum HijackThread {
    /// System calls a thread sleeps in without holding a libc-internal lock.
    static let sleepingCalls: Set<Int> = [0, 7, 23, 34, 35, 43, 45, 47, 61, 128, 130, 202, 230, 232, 247, 270, 271, 281, 288, 441]
    static let stepLimit = 200_000

    /// A thread asleep in one of `sleepingCalls` (the main thread first), or nil.
    static func sleepingThread(pid: Int32) -> Int32? {
        let threads = ProcFS.threads(pid)
        for tid in [pid] + threads.filter({ $0 != pid }).sorted() {
            // Only a sleeping thread (S in its stat): reading `syscall` of a running one waits until
            // the kernel has taken it off its CPU (wait_task_inactive), a scheduler tick or more.
            guard let stat = ProcFS.readFile("/proc/\(pid)/task/\(tid)/stat"), let close = stat.lastIndex(of: ")"),
                  stat[stat.index(after: close)...].dropFirst().first == "S" else { continue }
            guard let text = ProcFS.readFile("/proc/\(pid)/task/\(tid)/syscall"),
                  let first = text.split(separator: " ").first, let number = Int(first) else { continue }
            if sleepingCalls.contains(number) { return tid }
        }
        return nil
    }

    /// The executable ranges of the C library and the dynamic loader (glibc, libpthread, libdl, musl).
    static func libraryCode(_ index: SymbolIndex) -> [Range<UInt64>] {
        let prefixes = ["libc.so", "libc-2.", "ld-linux", "ld-2.", "libpthread", "libdl.so", "libdl-", "ld-musl", "libc.musl"]
        return index.modules.filter { module in prefixes.contains { module.name.hasPrefix($0) } }
            .flatMap { $0.mappings.filter(\.executable).map { $0.start..<$0.end } }
    }

    /// Makes sure `tid` (the only stopped thread) is not inside `libraryCode`, stepping it out
    /// (at most `stepLimit` instructions). A thread in a system call, or reaching one, is taken as
    /// it is. Returns the instructions stepped.
    static func stepOut(_ tid: Int32, of libraryCode: [Range<UInt64>], tracee: Tracee) throws -> Int {
        func insideLibrary(_ pc: UInt64) -> Bool { libraryCode.contains { $0.contains(pc) } }
        let registers = try tracee.registers(of: tid)
        if Int64(bitPattern: registers.origRax) >= 0 { return 0 }
        var pc = registers.rip
        var steps = 0
        while insideLibrary(pc) {
            if steps >= stepLimit {
                throw GraftError.remoteCallFailed(name: "pthread_create", pid: tracee.pid, tid: tid,
                                                  reason: "thread \(tid) stayed inside the C library for \(stepLimit) instructions (it could hold a lock the call needs); nothing was called — try again")
            }
            // A system call on the way could block: take the thread there, at the syscall.
            if try tracee.readMemory(at: pc, count: 2) == [0x0f, 0x05] { return steps }
            pc = try tracee.singleStep(tid)
            steps += 1
        }
        return steps
    }
}

extension Graft {
    /// Stops only the thread the loader call borrows (`HijackThread`), runs `body` with it, lets
    /// it go. Returns body's value, how long that thread was stopped, and how many instructions it
    /// was stepped to leave the C library first.
    func withHijackedThread<T>(_ pid: Int32, index: SymbolIndex, _ body: (Tracee, Int32) throws -> T) throws -> (T, UInt64, Int) {
        let tracer = operationTracer.thread
        let sleeping = HijackThread.sleepingThread(pid: pid)
        let thread = sleeping ?? pid
        return try tracer.run {
            // Real-time tracer thread where allowed, as in `withStoppedProcess`: each remote call or
            // step wakes graft after the target's thread ran; behind the target's busy threads a
            // normal tracer waits for the next tick.
            let realtime = getenv("GRAFT_NO_RT") == nil && graft_set_realtime_policy(1) == 0
            defer { if realtime { _ = graft_set_realtime_policy(0) } }
            if let signal = cancellation?() { throw GraftError.interrupted(signal: signal) }
            let tracee = try Tracee.attach(pid: pid, onlyThread: thread, tracer: tracer)
            let value: T
            var steps = 0
            do {
                insideHijackWindow?(tracee, thread)
                steps = try HijackThread.stepOut(thread, of: HijackThread.libraryCode(index), tracee: tracee)
                value = try body(tracee, thread)
            } catch {
                let death = tracee.processDeath()
                try? tracee.detach()
                throw death ?? error
            }
            try tracee.detach()
            return (value, tracee.stopWindowNanoseconds, steps)
        }
    }
}
