import CGraftShim
import GraftCore
import Glibc

/// A function called inside the target by one of its stopped threads: the primitive under loading
/// code into a process (issue 12: `pthread_create` for a loader thread, `dlopen`, `dlerror`).
///
/// As frida-core's and libpulp's injectors do it:
/// - every register is saved (the whole user_regs_struct, `fs_base` and `orig_rax` included) and put
///   back afterwards, whatever happened;
/// - `orig_rax = -1`: a thread stopped inside a blocking system call would otherwise have its new
///   rip rewound by the kernel's syscall-restart logic (rip -= 2) when it resumes;
/// - the stack pointer skips the 128-byte red zone below the interrupted code's rsp and is aligned
///   as the SysV ABI wants at a call (rsp + 8 a multiple of 16 at the function's first instruction);
/// - the return address is 0: the function's `ret` faults at address 0, a SIGSEGV stop with rip = 0
///   that graft takes as the return (and never delivers);
/// - only this thread runs: the others stay as they are (stopped, in a patch) — the caller chooses a
///   function that cannot wait for them (not `dlopen` itself: see issue 12's loader thread);
/// - a signal that arrives for the thread meanwhile is held and delivered when it resumes for real;
/// - bounded in time: a call that has not returned after `timeout` seconds is interrupted and
///   abandoned (registers restored) and reported — its frame is gone, and a lock it took stays
///   taken, which is why callers use it only for functions that take none they could block on.
extension Tracee {
    /// Calls the function at `function` with up to six integer arguments on thread `tid` (default:
    /// `threadForRemoteCall`) and returns its rax.
    public func remoteCall(_ function: UInt64, _ arguments: [UInt64], name: String, on tid: Int32? = nil,
                           timeout: Double = 5) throws -> UInt64 {
        guard arguments.count <= 6 else {
            throw GraftError.usage("a remote call of \(name) takes at most 6 integer arguments (rdi, rsi, rdx, rcx, r8, r9); \(arguments.count) given")
        }
        return try tracer.run {
            let thread = try tid ?? threadForRemoteCall()
            if let reason = threads[thread].flatMap(Tracee.whyNoRemoteCall) {
                throw GraftError.remoteCallFailed(name: name, pid: pid, tid: thread, reason: reason)
            }
            let saved = try registers(of: thread)
            var call = saved
            let stackTop = ((saved.rsp &- 128) & ~UInt64(15)) &- 8
            try writeWord(0, at: stackTop, via: thread)
            let args = arguments + Array(repeating: 0, count: 6 - arguments.count)
            call.rsp = stackTop
            call.rip = function
            call.rax = 0  // the number of vector registers a variadic callee reads
            call.origRax = UInt64.max
            call.rdi = args[0]; call.rsi = args[1]; call.rdx = args[2]
            call.rcx = args[3]; call.r8 = args[4]; call.r9 = args[5]
            try setRegisters(call, of: thread)
            var held: [Int32] = []
            var stopped = false
            defer {
                for signal in held { hold(signal: signal, for: thread) }
            }
            do {
                let result = try runUntilReturn(thread, name: name, timeout: timeout, held: &held, stopped: &stopped)
                try setRegisters(Tracee.restartable(saved, callWasStopped: stopped), of: thread)
                return result
            } catch {
                try? setRegisters(Tracee.restartable(saved, callWasStopped: true), of: thread)
                throw error
            }
        }
    }

    /// The registers to put back after a call. A thread stopped in a sleep (nanosleep, clock_nanosleep,
    /// poll, a futex wait with a timeout) was to resume through `restart_syscall`
    /// (rax = -ERESTART_RESTARTBLOCK), which reads the thread's one restart block — and a call that was
    /// itself stopped inside such a sleep (interrupted, abandoned at its timeout) wrote its own there:
    /// the original sleep would then wait for the called function's remainder (seen: 30 s for an
    /// abandoned sleep(30)). Then the original call starts over with its own arguments instead
    /// (-ERESTARTNOHAND: the kernel re-executes the syscall instruction), as after any signal.
    static func restartable(_ saved: Registers, callWasStopped: Bool) -> Registers {
        guard callWasStopped, Int64(bitPattern: saved.rax) == -516 else { return saved }
        var registers = saved
        registers.rax = UInt64(bitPattern: -514)
        return registers
    }

    /// Resumes `thread` and waits for the SIGSEGV at address 0 that is its return; other stops of it
    /// are handled on the way (signals held, new threads tracked, interrupt stops resumed; `stopped`
    /// says there were some).
    private func runUntilReturn(_ thread: Int32, name: String, timeout: Double, held: inout [Int32], stopped: inout Bool) throws -> UInt64 {
        let deadline = graft_monotonic_ns() &+ UInt64(max(timeout, 0.001) * 1e9)
        var signal: Int32 = 0
        var interrupted = false
        while true {
            if graft_ptrace(GRAFT_PTRACE_CONT, thread, 0, UInt64(signal)) != 0 {
                throw GraftError.ptrace("PTRACE_CONT", tid: thread, context: "remote call of \(name)")
            }
            signal = 0
            var status: Int32 = 0
            while true {
                let got = graft_waitpid(thread, &status, WNOHANG)
                if got == thread { break }
                if got < 0 { throw GraftError.systemCall(name: "waitpid", errno: errno, context: "remote call of \(name) in thread \(thread)") }
                if !interrupted, graft_monotonic_ns() >= deadline {
                    interrupted = true
                    _ = graft_ptrace(GRAFT_PTRACE_INTERRUPT, thread, 0, 0)
                }
                usleep(interrupted ? 1_000 : 50)
            }
            switch ThreadStop(status: status) {
            case .exited, .killed:
                threads[thread] = nil
                throw GraftError.processExited(pid: pid, status: ThreadStop(status: status).exitDescription)
            case .stopped(let stopSignal, let event):
                if event == 0 && stopSignal == SIGSEGV, (try? programCounter(of: thread)) == 0 {
                    return try registers(of: thread).rax
                }
                if interrupted {
                    throw GraftError.remoteCallFailed(name: name, pid: pid, tid: thread,
                                                      reason: "it did not return within \(timeout) s; the call was abandoned and the thread's registers restored")
                }
                if event == 0 && [SIGSEGV, SIGBUS, SIGILL, SIGFPE].contains(stopSignal) {
                    let pc = (try? programCounter(of: thread)).map(hex) ?? "?"
                    throw GraftError.remoteCallFailed(name: name, pid: pid, tid: thread,
                                                      reason: "it faulted (\(signalName(stopSignal)) at \(pc)); the thread's registers were restored and the signal not delivered")
                }
                stopped = true
                if event == Int32(GRAFT_PTRACE_EVENT_CLONE) {
                    // A thread the function created, traced automatically: kept like the others
                    // (stopped until the operation lets every thread go).
                    try collectClonedThread(reportedBy: thread)
                } else if event == 0 {
                    held.append(stopSignal)  // delivered when the thread resumes for real
                }
                // Interrupt and group stops: go on.
            }
        }
    }
}
