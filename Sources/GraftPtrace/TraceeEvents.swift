import CGraftShim
import GraftCore
import Glibc

/// PTRACE_O_* options a session adds to every traced thread with PTRACE_SETOPTIONS (not GraftKit's
/// `TraceOptions`, the options of a `graft trace` session). Threads the kernel attaches
/// later (clone, fork, vfork children) inherit the tracer's options.
public struct PtraceOptions: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let clone = PtraceOptions(rawValue: UInt64(GRAFT_PTRACE_O_TRACECLONE))
    public static let fork = PtraceOptions(rawValue: UInt64(GRAFT_PTRACE_O_TRACEFORK))
    public static let vfork = PtraceOptions(rawValue: UInt64(GRAFT_PTRACE_O_TRACEVFORK))
    public static let exec = PtraceOptions(rawValue: UInt64(GRAFT_PTRACE_O_TRACEEXEC))
}

/// One thing `waitForEvent` saw. The thread named stays stopped (except for `threadExited`) until
/// the caller resumes it.
public enum TraceEvent: Sendable, Equatable {
    /// A SIGTRAP that is not an event: an int3 (rip is one past it), a single step, or a SIGTRAP
    /// the target raised itself. The caller decides whose it is.
    case trap(tid: Int32)
    /// A signal on its way to the thread (signal-delivery-stop). Resume with it to deliver it.
    case signal(tid: Int32, signal: Int32)
    /// The thread entered a group-stop (SIGSTOP & co.): the session keeps it stopped with PTRACE_LISTEN.
    case groupStop(tid: Int32, signal: Int32)
    /// An interrupt stop (PTRACE_INTERRUPT), or the first stop of a thread the kernel just attached.
    case interrupted(tid: Int32)
    /// `parent` created thread `child`; the child is traced and stopped in its first stop.
    case newThread(parent: Int32, child: Int32)
    /// `parent` forked (or vforked) `child`, which is traced and stopped in its first stop: it has
    /// its own copy of the memory (fork) or shares it until it execs or exits (vfork).
    case forked(parent: Int32, child: Int32, isVfork: Bool)
    /// A thread of the process called execve successfully; every other thread is gone and the
    /// memory is new. `tid` is the thread group leader now.
    case exec(tid: Int32)
    /// A traced thread (or traced fork child) is gone.
    case threadExited(tid: Int32, status: ThreadStop)
    /// The first stop of a thread or process graft has not heard of yet: a clone or fork child whose
    /// parent's event has not been collected. It stays stopped until that event says what it is.
    case earlyStop(tid: Int32)
    /// Some other ptrace event (vfork-done, exit): resume and ignore.
    case other(tid: Int32, event: Int32)
}

extension Tracee {
    /// PTRACE_SETOPTIONS on every traced thread.
    public func setOptions(_ options: PtraceOptions) throws {
        try tracer.run {
            for tid in threads.keys.sorted() {
                if graft_ptrace(GRAFT_PTRACE_SETOPTIONS, tid, 0, options.rawValue) != 0, errno != ESRCH {
                    throw GraftError.systemCall(name: "PTRACE_SETOPTIONS", errno: errno, context: "thread \(tid)")
                }
            }
        }
    }

    /// Whether `tid` is one of the traced threads.
    public func isTraced(_ tid: Int32) -> Bool { threads[tid] != nil }

    /// Starts tracking a thread the kernel attached (new thread or fork child).
    public func track(_ tid: Int32) {
        if threads[tid] == nil { threads[tid] = ThreadRecord() }
    }

    /// Forgets a thread that is gone or detached.
    public func forget(_ tid: Int32) { threads[tid] = nil }

    /// Lets a stopped thread run (PTRACE_CONT), delivering `signal` (0: none). A thread that vanished
    /// meanwhile (ESRCH: killed, or its process exec'd) is not an error: its exit comes as an event.
    public func resume(_ tid: Int32, signal: Int32 = 0) throws {
        try tracer.run {
            if graft_ptrace(GRAFT_PTRACE_CONT, tid, 0, UInt64(signal)) != 0, errno != ESRCH {
                throw GraftError.systemCall(name: "PTRACE_CONT", errno: errno, context: "thread \(tid)")
            }
        }
    }

    /// Lets a stopped thread execute one instruction (PTRACE_SINGLESTEP), delivering `signal` first
    /// (0: none): with a handler, the kernel sets up its frame and reports a SIGTRAP stop at the
    /// handler's first instruction before running it. The stop comes as an event (`waitForEvent`).
    public func step(_ tid: Int32, signal: Int32 = 0) throws {
        try tracer.run {
            if graft_ptrace(GRAFT_PTRACE_SINGLESTEP, tid, 0, UInt64(signal)) != 0, errno != ESRCH {
                throw GraftError.systemCall(name: "PTRACE_SINGLESTEP", errno: errno, context: "thread \(tid)")
            }
        }
    }

    /// Resumes every traced thread, delivering the signals held for each (the first through
    /// PTRACE_CONT, the rest queued again with tgkill). Threads in group-stop are left in it
    /// (PTRACE_LISTEN), as the kernel would. Threads in `except` stay stopped.
    public func resumeAll(except: Set<Int32> = []) throws {
        try tracer.run {
            for tid in threads.keys.sorted() where !except.contains(tid) {
                var record = threads[tid]!
                if record.groupStopped {
                    _ = graft_ptrace(GRAFT_PTRACE_LISTEN, tid, 0, 0)
                    continue
                }
                let deliver = record.pendingSignals.first ?? 0
                for extra in record.pendingSignals.dropFirst() { _ = graft_tgkill(pid, tid, extra) }
                record.pendingSignals.removeAll()
                threads[tid] = record
                try resume(tid, signal: deliver)
            }
        }
    }

    /// Keeps a thread in its group-stop while letting the tracer hear of SIGCONT (PTRACE_LISTEN).
    public func listen(_ tid: Int32) throws {
        try tracer.run {
            threads[tid]?.groupStopped = true
            if graft_ptrace(GRAFT_PTRACE_LISTEN, tid, 0, 0) != 0, errno != ESRCH {
                throw GraftError.systemCall(name: "PTRACE_LISTEN", errno: errno, context: "thread \(tid)")
            }
        }
    }

    /// Asks a running thread to stop (PTRACE_INTERRUPT); its stop arrives as `.interrupted` (or as
    /// whatever stop it reached first).
    public func interrupt(_ tid: Int32) throws {
        try tracer.run {
            if graft_ptrace(GRAFT_PTRACE_INTERRUPT, tid, 0, 0) != 0, errno != ESRCH {
                throw GraftError.systemCall(name: "PTRACE_INTERRUPT", errno: errno, context: "thread \(tid)")
            }
        }
    }

    /// The signals held for `tid` (arrived while graft stopped it), which the caller now delivers:
    /// the first is returned for the thread's next resume, the others are queued again (tgkill).
    public func takeFirstHeldSignal(of tid: Int32) -> Int32 {
        guard let held = threads[tid]?.pendingSignals, let first = held.first else { return 0 }
        threads[tid]?.pendingSignals = []
        for extra in held.dropFirst() { _ = graft_tgkill(pid, tid, extra) }
        return first
    }

    /// Holds `signal` for `tid`: delivered when the thread is resumed by `resumeAll` or at detach.
    public func hold(signal: Int32, for tid: Int32) {
        threads[tid]?.pendingSignals.append(signal)
    }

    /// Marks a group-stopped thread as running again (SIGCONT arrived).
    public func clearGroupStop(_ tid: Int32) {
        threads[tid]?.groupStopped = false
    }

    /// Detaches one thread or fork child (PTRACE_DETACH), delivering `signal`.
    public func detachThread(_ tid: Int32, signal: Int32 = 0) {
        _ = try? tracer.run {
            _ = graft_ptrace(GRAFT_PTRACE_DETACH, tid, 0, UInt64(signal))
            threads[tid] = nil
        }
    }

    /// Writes any memory of the process (code included) through /proc/PID/mem. Unlike POKETEXT it
    /// needs no stopped thread, so a session can insert a breakpoint while threads run; a one-byte
    /// write is atomic for other threads: they see the old byte or the new one.
    public func writeMemory(at address: UInt64, bytes: [UInt8]) throws {
        guard !bytes.isEmpty else { return }
        try tracer.run {
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { buffer in
                    pwrite(memFD, buffer.baseAddress! + done, bytes.count - done, off_t(Int64(bitPattern: address &+ UInt64(done))))
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == EIO || errno == EFAULT { throw GraftError.addressNotMapped(address: address &+ UInt64(done)) }
                    if errno == ESRCH { throw exitError() }
                    throw GraftError.systemCall(name: "pwrite", errno: errno, context: "/proc/\(pid)/mem at \(hex(address))")
                }
                if n == 0 { throw GraftError.addressNotMapped(address: address &+ UInt64(done)) }
                done += n
            }
        }
    }

    /// Writes the memory of another traced process (a fork child's own copy) with POKETEXT.
    public func writeText(process child: Int32, at address: UInt64, bytes: [UInt8]) throws {
        try tracer.run {
            for (index, byte) in bytes.enumerated() {
                let at = address + UInt64(index)
                let word = at & ~7
                var value: UInt64 = 0
                if graft_peektext(child, word, &value) != 0 { throw GraftError.threadVanished(tid: child) }
                let shift = (at - word) * 8
                value = (value & ~(0xff << shift)) | (UInt64(byte) << shift)
                if graft_ptrace(GRAFT_PTRACE_POKETEXT, child, word, value) != 0 { throw GraftError.threadVanished(tid: child) }
            }
        }
    }

    /// One word of target memory, read through a stopped thread (PTRACE_PEEKDATA): the cheapest way to
    /// read a return address off the stack.
    public func readWord(at address: UInt64, via tid: Int32) throws -> UInt64 {
        try tracer.run {
            var value: UInt64 = 0
            if graft_peektext(tid, address, &value) != 0 {
                throw GraftError.ptraceWord(at: address, tid: tid)
            }
            return value
        }
    }

    /// Writes one word (stack, data) through a stopped thread (PTRACE_POKEDATA).
    public func writeWord(_ value: UInt64, at address: UInt64, via tid: Int32) throws {
        try tracer.run {
            if graft_ptrace(GRAFT_PTRACE_POKETEXT, tid, address, value) != 0 {
                throw GraftError.ptraceWord(at: address, tid: tid)
            }
        }
    }

    /// The si_code of the signal that stopped `tid` (PTRACE_GETSIGINFO); nil if unavailable.
    public func signalCode(of tid: Int32) -> Int32? {
        guard let value = try? tracer.run({ () -> Int32? in
            var code: Int32 = 0
            return graft_siginfo_code(tid, &code) == 0 ? code : nil
        }) else { return nil }
        return value
    }

    /// Waits for the next stop or exit of any thread traced by this tracer thread.
    ///
    /// `waitpid(-1, __WALL | __WNOTHREAD)`: __WNOTHREAD limits the wait to tracees and children of the
    /// calling thread, so it never steals the exit of a process another thread of graft (or of a test
    /// runner) started — the reason design.md says never to wait on -1 without it. Returns nil when
    /// interrupted by a signal (see `TracerThread.wake`) or, with `block == false`, when nothing is
    /// pending.
    public func waitForEvent(block: Bool = true) throws -> TraceEvent? {
        try tracer.run {
            var status: Int32 = 0
            let tid = graft_waitpid_any(&status, block ? 0 : 1)
            if tid == 0 { return nil }
            if tid < 0 {
                if errno == EINTR { return nil }
                if errno == ECHILD { throw exitError() }
                throw GraftError.systemCall(name: "waitpid", errno: errno, context: "process \(pid)")
            }
            let stop = ThreadStop(status: status)
            switch stop {
            case .exited, .killed:
                threads[tid] = nil
                return .threadExited(tid: tid, status: stop)
            case .stopped(let signal, let event):
                if threads[tid] == nil { return .earlyStop(tid: tid) }
                noteStop(tid, event: event)
                switch event {
                case 0:
                    return signal == SIGTRAP ? .trap(tid: tid) : .signal(tid: tid, signal: signal)
                case Int32(GRAFT_PTRACE_EVENT_STOP):
                    // Under PTRACE_SEIZE a group-stop reports the stop signal; an interrupt stop and the
                    // first stop of an auto-attached thread report SIGTRAP.
                    if signal == SIGSTOP || signal == SIGTSTP || signal == SIGTTIN || signal == SIGTTOU {
                        return .groupStop(tid: tid, signal: signal)
                    }
                    return .interrupted(tid: tid)
                case Int32(GRAFT_PTRACE_EVENT_CLONE), Int32(GRAFT_PTRACE_EVENT_FORK), Int32(GRAFT_PTRACE_EVENT_VFORK):
                    var message: UInt = 0
                    _ = graft_geteventmsg(tid, &message)
                    let child = Int32(truncatingIfNeeded: message)
                    if event == Int32(GRAFT_PTRACE_EVENT_CLONE) {
                        if threads[child] == nil { threads[child] = ThreadRecord() }
                        return .newThread(parent: tid, child: child)
                    }
                    return .forked(parent: tid, child: child, isVfork: event == Int32(GRAFT_PTRACE_EVENT_VFORK))
                case Int32(GRAFT_PTRACE_EVENT_EXEC):
                    // The exec'ing thread took over the leader's tid; the others are gone.
                    var message: UInt = 0
                    _ = graft_geteventmsg(tid, &message)
                    // Only when the exec is this process's: a vfork child's exec (another process,
                    // traced through the vfork) reports its own pid and leaves our threads alone.
                    if tid == pid { for other in threads.keys where other != tid { threads[other] = nil } }
                    return .exec(tid: tid)
                default:
                    return .other(tid: tid, event: event)
                }
            }
        }
    }

    /// Waits for the first stop of a child the kernel auto-attached (a fork child), blocking.
    public func waitForFirstStop(of child: Int32) throws -> ThreadStop {
        try tracer.run {
            var status: Int32 = 0
            if graft_waitpid(child, &status, 0) < 0 {
                throw GraftError.systemCall(name: "waitpid", errno: errno, context: "child \(child)")
            }
            return ThreadStop(status: status)
        }
    }
}
