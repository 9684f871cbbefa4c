import GraftCore
import GraftMachine
import GraftPtrace

/// Signal handlers the user did not ask to trace (`--signals`, `TraceSignalHandlers`): instead of
/// stepping a handler — Go's SIGURG preemption is ~500 instructions of runtime per 10 ms of a running
/// goroutine, more than most traced calls — the thread runs free from the handler's first
/// instruction until it is back at the interrupted instruction with the interrupted stack pointer,
/// caught by a return breakpoint there (the same kind `--depth` puts at return addresses).
///
/// Where the thread comes back is read from the signal frame, not guessed: after a C handler
/// `rt_sigreturn` restores that pc and rsp; after Go's preemption handler it lands in
/// `runtime.asyncPreempt` (the handler pushed the interrupted pc as if it were called), whose `ret`
/// goes back to the same pc with the same rsp — possibly on another thread, if the scheduler moved
/// the goroutine meanwhile (`adopt`).
extension Stepper {
    /// rt_sigframe (arch/x86/include/asm/sigframe.h) as the handler's first instruction sees it: the
    /// return address (`pretcode`) at rsp, then `struct ucontext`: uc_flags, uc_link, uc_stack
    /// (24 bytes), then uc_mcontext, a `struct sigcontext`: r8 … r15, rdi, rsi, rbp, rbx, rdx, rax, rcx,
    /// rsp, rip. The kernel clears the trap flag graft set before it saves the flags (handle_signal:
    /// "so that register information in the sigcontext is correct"), so the interrupted context
    /// resumes without graft's single-step.
    static let savedRSPOffset: UInt64 = 8 + 40 + 15 * 8
    static let savedRIPOffset: UInt64 = savedRSPOffset + 8

    /// The stepped thread stopped at the first instruction of a handler of `signal`: let it run free
    /// and step on where it was interrupted. False when that is impossible (no breakpoint can sit
    /// there): the handler is then stepped.
    func skipHandler(signal: Int32, registers: Registers, host: some StepperHost, onEvent: (HookEvent) -> Void) throws -> Bool {
        guard let tid else { return false }
        guard let savedRSP = try? host.tracee.readWord(at: registers.rsp &+ Self.savedRSPOffset, via: tid),
              let savedRIP = try? host.tracee.readWord(at: registers.rsp &+ Self.savedRIPOffset, via: tid) else { return false }
        // A `syscall` cannot hold a return breakpoint (another thread could block in its out-of-line
        // copy); it is where a signal that arrives during a restartable call leaves the thread. The
        // thread then runs that one system call free too, and is caught after it.
        let interrupted = site(at: savedRIP, host: host)
        let catchAt = interrupted.kind == .syscall ? savedRIP &+ UInt64(interrupted.size) : savedRIP
        guard try host.ensureReturnSite(catchAt, via: tid, onEvent: onEvent) else {
            if !toldSkipping {
                toldSkipping = true
                onEvent(.notice("cannot let the \(signalName(signal)) handler run free (no breakpoint at the interrupted instruction): stepping it"))
            }
            return false
        }
        if !toldSkipping {
            toldSkipping = true
            onEvent(.notice("\(signalName(signal)) handler runs free, not stepped (--signals step traces handlers)"))
        }
        handlersSkipped[signal, default: 0] += 1
        freeSyscall = catchAt == savedRIP ? nil : savedRIP
        // The breakpoint at savedRIP is hit with rsp == savedRSP: `intercept` expects rsp + 8.
        mode = .steppingOver(returnAddress: catchAt, rsp: savedRSP &- 8)
        dropTrapFlag(tid, host: host)
        try host.tracee.resume(tid)
        return true
    }

    /// Back from a handler that ran free after the `syscall` it interrupted (`freeSyscall`): that
    /// instruction ran, unstepped; it counts as stepped (the registers show its result).
    func accountFreeSyscall(_ registers: inout Registers, host: some StepperHost, onEvent: (HookEvent) -> Void) throws -> Bool {
        guard let pc = freeSyscall else { return true }
        freeSyscall = nil
        account(pc: pc, site: site(at: pc, host: host), newPC: registers.rip, rsp: registers.rsp, host: host, onEvent: onEvent)
        return try continueAfterAccount(&registers, host, onEvent: onEvent)
    }

    /// The stack the trace follows is now run by thread `thread` (a goroutine moved while it ran free).
    func adopt(_ thread: Int32, onEvent: (HookEvent) -> Void) {
        if !toldThreadChange, let tid {
            toldThreadChange = true
            onEvent(.notice("the traced code moved from thread \(tid) to thread \(thread) (same stack: a goroutine); following it"))
        }
        affinity.release()
        tid = thread
        lastTid = thread
        affinity.hold(thread)
    }
}
