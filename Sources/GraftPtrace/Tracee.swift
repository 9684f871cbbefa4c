import CGraftShim
import GraftCore
import Glibc

/// What `waitpid` said about one traced thread.
public enum ThreadStop: Sendable, Equatable {
    /// ptrace-stop: `signal` is WSTOPSIG, `event` the PTRACE_EVENT_* number (0 for a signal-delivery stop).
    case stopped(signal: Int32, event: Int32)
    case exited(code: Int32)
    case killed(signal: Int32)

    init(status: Int32) {
        if graft_wifstopped(status) != 0 {
            self = .stopped(signal: graft_wstopsig(status), event: graft_wevent(status))
        } else if graft_wifexited(status) != 0 {
            self = .exited(code: graft_wexitstatus(status))
        } else {
            self = .killed(signal: graft_wtermsig(status))
        }
    }

    /// `exited with status 3`, `killed by SIGKILL`.
    public var exitDescription: String {
        switch self {
        case .exited(let code): return "exited with status \(code)"
        case .killed(let signal): return "killed by \(signalName(signal))"
        case .stopped(let signal, _): return "stopped by \(signalName(signal))"
        }
    }
}

/// A process graft has attached to: every thread seized and stopped.
///
/// Attach follows gdb's `linux_proc_attach_tgid_threads`: PTRACE_SEIZE + PTRACE_INTERRUPT every thread
/// in /proc/PID/task, re-reading the directory until a pass finds nothing new; PTRACE_O_TRACECLONE makes
/// the kernel attach threads created meanwhile. PTRACE_O_EXITKILL is never set: a crashed graft must not
/// take the target with it. Every method runs on the tracee's `TracerThread`.
public final class Tracee: @unchecked Sendable {
    struct ThreadRecord {
        var pendingSignals: [Int32] = []
        var groupStopped = false
        /// Its last stop is a ptrace event inside a system call (clone, fork, vfork, exec, …): the
        /// kernel finishes that call when the thread resumes and writes its result into rax, so the
        /// thread cannot run a remote system call (the call would run with the clone's result as
        /// its number, and the restored registers would make the clone fail: glibc then retries
        /// with clone, and the new thread's start routine runs twice).
        var inSyscallEvent = false
    }

    public let pid: Int32
    public let tracer: TracerThread
    private let ownsTracer: Bool
    var threads: [Int32: ThreadRecord] = [:]
    var memFD: Int32 = -1
    /// /proc/PID/task, open from the attach to the detach (its st_nlink counts the threads).
    var taskFD: Int32 = -1
    var syscallGadget: UInt64?
    public internal(set) var isAttached = false

    /// CLOCK_MONOTONIC nanoseconds: the first PTRACE_SEIZE, when every thread was stopped, and
    /// the last PTRACE_DETACH. `stopWindow` is how long the target was (partly) stopped.
    public private(set) var stopRequestedAt: UInt64 = 0
    public private(set) var allStoppedAt: UInt64 = 0
    public private(set) var resumedAt: UInt64 = 0
    public var stopWindowNanoseconds: UInt64 { resumedAt >= stopRequestedAt ? resumedAt - stopRequestedAt : 0 }

    /// A process graft started and seized itself (see `launch`): one thread, stopped.
    init(launched pid: Int32, tracer: TracerThread) {
        self.pid = pid
        self.tracer = tracer
        self.ownsTracer = false
        self.threads = [pid: ThreadRecord()]
        self.memFD = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
        self.isAttached = true
        self.isLaunched = true
    }

    /// True when graft started the process (`launch`): graft is its parent and reaps it.
    public private(set) var isLaunched = false

    private init(pid: Int32, tracer: TracerThread, ownsTracer: Bool) {
        self.pid = pid
        self.tracer = tracer
        self.ownsTracer = ownsTracer
    }

    deinit {
        if isAttached { try? detach() }
        if memFD >= 0 { close(memFD) }
        if taskFD >= 0 { close(taskFD) }
        if ownsTracer { tracer.shutdown() }
    }

    /// Seizes and stops every thread of `pid`. On return all threads are in ptrace-stop.
    public static func attach(pid: Int32, tracer: TracerThread? = nil) throws -> Tracee {
        try ProcFS.preflight(pid)
        let tracee = Tracee(pid: pid, tracer: tracer ?? TracerThread(), ownsTracer: tracer == nil)
        try tracee.tracer.run {
            do {
                try tracee.seizeAndStopAll()
            } catch {
                tracee.detachAllQuietly()
                throw error
            }
        }
        return tracee
    }

    /// Seizes and stops one thread of `pid`, `thread`, and no other: the rest of the process runs
    /// on (frida-core's injector does the same). For remote calls that must not wait on a lock a
    /// stopped thread holds: the new threads such a call creates are not traced (no
    /// PTRACE_O_TRACECLONE) and run at once.
    public static func attach(pid: Int32, onlyThread thread: Int32, tracer: TracerThread? = nil) throws -> Tracee {
        try ProcFS.preflight(pid)
        let tracee = Tracee(pid: pid, tracer: tracer ?? TracerThread(), ownsTracer: tracer == nil)
        try tracee.tracer.run {
            tracee.memFD = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
            if tracee.memFD < 0 {
                if errno == ENOENT { throw GraftError.noSuchProcess(pid: pid) }
                throw ProcFS.diagnosePermission(pid, refused: "opening /proc/\(pid)/mem")
            }
            _ = Tracee.warmedUp
            tracee.stopRequestedAt = graft_monotonic_ns()
            if graft_ptrace(GRAFT_PTRACE_SEIZE, thread, 0, 0) != 0 {
                if errno == ESRCH { throw GraftError.threadVanished(tid: thread) }
                if errno == EPERM { throw ProcFS.diagnosePermission(pid) }
                throw GraftError.systemCall(name: "PTRACE_SEIZE", errno: errno, context: "thread \(thread) of process \(pid)")
            }
            tracee.threads[thread] = ThreadRecord()
            do {
                if graft_ptrace(GRAFT_PTRACE_INTERRUPT, thread, 0, 0) != 0, errno != ESRCH {
                    throw GraftError.systemCall(name: "PTRACE_INTERRUPT", errno: errno, context: "thread \(thread)")
                }
                var none: Set<Int32> = []
                try tracee.collectFirstStop(thread, newThreads: &none)
                guard tracee.threads[thread] != nil else { throw GraftError.threadVanished(tid: thread) }
            } catch {
                tracee.detachAllQuietly()
                throw error
            }
            tracee.allStoppedAt = graft_monotonic_ns()
            tracee.isAttached = true
        }
        return tracee
    }

    /// Thread ids currently traced and stopped.
    public var threadIDs: [Int32] { threads.keys.sorted() }
    /// Calls `body` with every thread id, in no particular order, building no array (for the stop
    /// window). A closure, not a collection: iterating `some Collection` from another module is
    /// unspecialized and made the window instantiate `Dictionary.Keys` metadata at its first use
    /// (two `swift_getTypeByMangledName` calls, ~30 µs, caught by bench/window_runtime.sh).
    public func forEachThreadID(_ body: (Int32) throws -> Void) rethrows {
        for tid in threads.keys { try body(tid) }
    }

    // MARK: - Attach

    /// Set once per process (thread-safe lazy global) by the first attach.
    private static let warmedUp: Int = warmUp(getpid())

    /// Runs, before the first stop, the generic code the stop window runs, so that the window pays
    /// no one-time Swift runtime work: the first use of a generic type in a process instantiates
    /// its metadata (`swift_getTypeByMangledName`, `_ContiguousArrayStorage<T>` class set-up:
    /// 5-30 µs each, measured with uprobes inside an `unpatch` window). `patch` had run most of
    /// these types while planning; `unpatch` met them first with the target stopped. Every type
    /// the window's code builds is here: the thread table, its sorted keys, the waiting set, the
    /// words of a text write and their bytes. Values depend on `seed` so nothing folds away.
    static func warmUp(_ seed: Int32) -> Int {
        var table: [Int32: ThreadRecord] = [:]
        table[seed] = ThreadRecord(pendingSignals: [seed])
        var waiting: Set<Int32> = []
        waiting.insert(seed)
        let first = waiting.first ?? 0
        waiting.remove(first)
        var listed = [Int32](repeating: seed, count: 2)
        listed.sort()
        listed.removeLast(1)
        var words = TextWords(at: UInt64(UInt32(bitPattern: seed)), count: 9)
        words.values[0] = UInt64(seed)
        let merged = words.merging([UInt8(truncatingIfNeeded: seed)])
        var written: [Int] = []
        for i in merged.indices where merged[i] != words.values[i] { written.append(i) }
        var stepped: [Int32] = []
        stepped.append(seed)
        return table.keys.sorted().count &+ listed.count &+ words.bytes.count &+ TextWords.bytes(of: merged[0]).count
            &+ written.count &+ stepped.count &+ (table[first]?.pendingSignals.count ?? 0)
    }

    private func seizeAndStopAll() throws {
        // Opened before the first stop so the stop window holds only ptrace work.
        if memFD < 0 {
            memFD = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
            if memFD < 0 {
                if errno == ENOENT { throw GraftError.noSuchProcess(pid: pid) }
                if errno == EACCES || errno == EPERM { throw ProcFS.diagnosePermission(pid, refused: "opening /proc/\(pid)/mem") }
                throw GraftError.systemCall(name: "open", errno: errno, context: "/proc/\(pid)/mem")
            }
        }
        _ = Tracee.warmedUp
        // The process's thread count, read once everything known is stopped: equal to the threads
        // graft holds, no other thread exists (those it holds are live), and the second listing of
        // /proc/PID/task (~10 µs of getdents in the window) is not needed. The directory is opened
        // now; in the window one fstat gives the count (its st_nlink is 2 + the threads).
        if taskFD < 0 { taskFD = open("/proc/\(pid)/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC) }  // closed at detach
        // The first listing is read before anything stops; the window starts at the first seize.
        let initialThreads = ProcFS.threads(pid)
        stopRequestedAt = 0
        // Allocate before the window: a first insert into empty storage mallocs, and this thread's
        // first malloc sets up its arena (~60 µs measured between SEIZE and INTERRUPT otherwise).
        threads.reserveCapacity(max(16, initialThreads.count * 2))
        var waiting: Set<Int32> = []
        waiting.reserveCapacity(max(16, initialThreads.count * 2))
        var pass = 0
        var exiting: Set<Int32> = []  // listed but exiting: never seized, not looked at again
        while true {
            pass += 1
            var found = false  // a thread seized in this pass: list again
            for tid in (pass == 1 ? initialThreads : ProcFS.threads(pid)) where threads[tid] == nil && !exiting.contains(tid) {
                if stopRequestedAt == 0 { stopRequestedAt = graft_monotonic_ns() }
                if graft_ptrace(GRAFT_PTRACE_SEIZE, tid, 0, UInt64(GRAFT_PTRACE_O_TRACECLONE)) != 0 {
                    let err = errno
                    if err == ESRCH {
                        if tid == pid { throw GraftError.noSuchProcess(pid: pid) }
                        continue  // the thread exited between the listing and the seize
                    }
                    // An exiting thread (exit_state set, not yet reaped) refuses to be attached
                    // with EPERM, not ESRCH: it is gone for graft's purposes. Diagnosing it as a
                    // permission problem named graft itself as "already tracing" the process.
                    if err == EPERM, tid != pid, ProcFS.threadIsExiting(pid, tid) { exiting.insert(tid); continue }
                    if err == EPERM { throw ProcFS.diagnosePermission(pid) }
                    throw GraftError.systemCall(name: "PTRACE_SEIZE", errno: err, context: "thread \(tid) of process \(pid)")
                }
                found = true
                threads[tid] = ThreadRecord()
                if graft_ptrace(GRAFT_PTRACE_INTERRUPT, tid, 0, 0) != 0, errno != ESRCH {
                    throw GraftError.systemCall(name: "PTRACE_INTERRUPT", errno: errno, context: "thread \(tid)")
                }
                waiting.insert(tid)
            }
            // Collect the stops of this pass; clone events add threads the kernel attached for us.
            while let tid = waiting.first {
                waiting.remove(tid)
                try collectFirstStop(tid, newThreads: &waiting)
            }
            if threads.isEmpty { throw GraftError.noSuchProcess(pid: pid) }
            if !found || pass > 100 { break }
            if taskFD >= 0, exiting.isEmpty, graft_task_count(taskFD) == threads.count { break }
        }
        allStoppedAt = graft_monotonic_ns()
        isAttached = true
    }

    /// `tid` reported PTRACE_EVENT_CLONE while graft ran it alone (a single step, a remote call): the
    /// new thread is traced already; record it, and any it created in turn, stopped like the others.
    func collectClonedThread(reportedBy tid: Int32) throws {
        var message: UInt = 0
        guard graft_geteventmsg(tid, &message) == 0 else { return }
        var more: Set<Int32> = [Int32(truncatingIfNeeded: message)]
        while let child = more.first {
            more.remove(child)
            threads[child] = ThreadRecord()
            try collectFirstStop(child, newThreads: &more)
        }
    }

    /// Waits for the first stop of a freshly seized (or auto-attached) thread and records why it stopped.
    func collectFirstStop(_ tid: Int32, newThreads: inout Set<Int32>) throws {
        var status: Int32 = 0
        if graft_waitpid(tid, &status, 0) < 0 {
            if errno == ECHILD { threads[tid] = nil; return }
            throw GraftError.systemCall(name: "waitpid", errno: errno, context: "thread \(tid)")
        }
        switch ThreadStop(status: status) {
        case .exited, .killed:
            threads[tid] = nil
            if tid == pid, ProcFS.status(pid) == nil {
                throw GraftError.processExited(pid: pid, status: ThreadStop(status: status).exitDescription)
            }
        case .stopped(let signal, let event):
            if threads[tid] == nil { threads[tid] = ThreadRecord() }
            noteStop(tid, event: event)
            switch event {
            case Int32(GRAFT_PTRACE_EVENT_STOP):
                // SIGTRAP: our interrupt. SIGSTOP/SIGTSTP/SIGTTIN/SIGTTOU: the process is in group-stop.
                if signal != SIGTRAP { threads[tid]?.groupStopped = true }
            case Int32(GRAFT_PTRACE_EVENT_CLONE), Int32(GRAFT_PTRACE_EVENT_FORK), Int32(GRAFT_PTRACE_EVENT_VFORK):
                var message: UInt = 0
                if event == Int32(GRAFT_PTRACE_EVENT_CLONE), graft_geteventmsg(tid, &message) == 0 {
                    let child = Int32(truncatingIfNeeded: message)
                    if threads[child] == nil {
                        threads[child] = ThreadRecord()
                        newThreads.insert(child)
                    }
                }
            case 0:
                // A signal-delivery stop reported before our interrupt: keep the signal and deliver it
                // when the thread is resumed, so the target loses nothing.
                threads[tid]?.pendingSignals.append(signal)
            default:
                break
            }
        }
    }

    // MARK: - Detach

    /// Signals graft is holding for each thread (received while it was stopped), in arrival order.
    public func pendingSignals(of tid: Int32) -> [Int32] { threads[tid]?.pendingSignals ?? [] }

    /// Lets every thread go as it was: running, or back in group-stop (the kernel re-stops a thread
    /// detached while its group stop is in effect). Held signals are delivered: the first through
    /// PTRACE_DETACH's data, the rest queued again with tgkill.
    public func detach() throws {
        try tracer.run {
            guard isAttached || !threads.isEmpty else { return }
            var firstError: GraftError?
            for tid in threads.keys.sorted() {
                let record = threads[tid]!
                let deliver = record.pendingSignals.first ?? 0
                for extra in record.pendingSignals.dropFirst() { _ = graft_tgkill(pid, tid, extra) }
                if graft_ptrace(GRAFT_PTRACE_DETACH, tid, 0, UInt64(deliver)) != 0, errno != ESRCH, firstError == nil {
                    firstError = .systemCall(name: "PTRACE_DETACH", errno: errno, context: "thread \(tid)")
                }
            }
            threads.removeAll()
            isAttached = false
            resumedAt = graft_monotonic_ns()
            if taskFD >= 0 { close(taskFD); taskFD = -1 }
            if let error = firstError { throw error }
        }
    }

    private func detachAllQuietly() {
        for tid in threads.keys {
            let record = threads[tid]!
            _ = graft_ptrace(GRAFT_PTRACE_DETACH, tid, 0, UInt64(record.pendingSignals.first ?? 0))
        }
        threads.removeAll()
        isAttached = false
    }

    // MARK: - Helpers

    public func anyThread() throws -> Int32 {
        if threads[pid] != nil { return pid }
        guard let tid = threads.keys.min() else { throw exitError() }
        return tid
    }

    /// Records what kind of stop `tid` reported (`event`: its PTRACE_EVENT_*, 0 for a signal stop).
    /// Written only when it changes: a write through the dictionary's modify accessor mallocs its
    /// coroutine frame (seen in the stop window by bench/window_runtime.sh, and paid per hook hit).
    func noteStop(_ tid: Int32, event: Int32) {
        let inEvent = event != 0 && event != Int32(GRAFT_PTRACE_EVENT_STOP)
        if threads[tid]?.inSyscallEvent != inEvent { threads[tid]?.inSyscallEvent = inEvent }
    }

    func exitError() -> GraftError {
        processDeath() ?? .processExited(pid: pid, status: "it is gone")
    }

    /// `processExited` with how the process ended when it has died under graft (a ptrace or memory
    /// error then says "thread vanished" or "not mapped", which would mislead), nil while it lives.
    /// Collects only exit reports (stops stay queued for whoever waits next), waiting up to 100 ms
    /// for a dying process to report.
    public func processDeath() -> GraftError? {
        if let death { return death }
        death = (try? tracer.run { () -> GraftError? in
            var how: String?
            let deadline = graft_monotonic_ns() + 100_000_000
            while true {
                var other: String?  // how a non-leader thread ended: the process's way too, if it is dead
                for tid in [pid] + threads.keys.filter({ $0 != pid }).sorted() {
                    var status: Int32 = 0
                    guard graft_wait_exit_nohang(tid, &status) == tid else { continue }
                    threads[tid] = nil
                    if tid == pid { how = ThreadStop(status: status).exitDescription } else if other == nil { other = ThreadStop(status: status).exitDescription }
                }
                let state = ProcFS.status(pid)?["State"]
                let alive = state.map { !$0.hasPrefix("Z") && !$0.hasPrefix("X") } ?? false
                if alive && how == nil { return nil }  // one thread's exit is not the process's
                if how == nil, !alive { how = other }
                if let how { isAttached = threads.isEmpty ? false : isAttached; return .processExited(pid: pid, status: how) }
                if graft_monotonic_ns() > deadline { return .processExited(pid: pid, status: "it is gone") }
                usleep(1000)
            }
        }) ?? nil
        return death
    }
    private var death: GraftError?
}
