import CGraftShim
import GraftCore
import Glibc

/// Registers of a stopped thread (PTRACE_GETREGS/SETREGS, rip alone through PEEKUSER/POKEUSER) and
/// single steps taken synchronously.
extension Tracee {
    public func registers(of tid: Int32) throws -> Registers {
        try tracer.run {
            var raw = user_regs_struct()
            if graft_getregs(tid, &raw) != 0 {
                throw GraftError.ptrace("PTRACE_GETREGS", tid: tid, context: "thread \(tid)")
            }
            return Registers(raw: raw)
        }
    }

    /// rip alone (PTRACE_PEEKUSER): the hit path's cheapest read.
    public func programCounter(of tid: Int32) throws -> UInt64 {
        try tracer.run {
            var pc: UInt64 = 0
            if graft_get_pc(tid, &pc) != 0 {
                throw GraftError.ptrace("PTRACE_PEEKUSER", tid: tid, context: "rip of thread \(tid)")
            }
            return pc
        }
    }

    /// Sets rip alone (PTRACE_POKEUSER), for a stop after which nothing but the pc changes.
    public func setProgramCounter(_ pc: UInt64, of tid: Int32) throws {
        try tracer.run {
            if graft_set_pc(tid, pc) != 0 {
                throw GraftError.ptrace("PTRACE_POKEUSER", tid: tid, context: "rip of thread \(tid)")
            }
        }
    }

    public func setRegisters(_ registers: Registers, of tid: Int32) throws {
        try tracer.run {
            var raw = registers.raw
            if graft_setregs(tid, &raw) != 0 {
                throw GraftError.ptrace("PTRACE_SETREGS", tid: tid, context: "thread \(tid)")
            }
        }
    }

    /// Executes exactly one instruction of `tid` (PTRACE_SINGLESTEP) and returns the new pc.
    /// Signals that arrive meanwhile are held and delivered at detach, never lost; a leftover
    /// interrupt stop or a clone event does not count as the step.
    @discardableResult
    public func singleStep(_ tid: Int32) throws -> UInt64 {
        try tracer.run {
            for _ in 0..<64 {
                if graft_ptrace(GRAFT_PTRACE_SINGLESTEP, tid, 0, 0) != 0 {
                    throw GraftError.ptrace("PTRACE_SINGLESTEP", tid: tid, context: "thread \(tid)")
                }
                var status: Int32 = 0
                if graft_waitpid(tid, &status, 0) < 0 {
                    throw GraftError.systemCall(name: "waitpid", errno: errno, context: "thread \(tid)")
                }
                switch ThreadStop(status: status) {
                case .exited, .killed:
                    threads[tid] = nil
                    if tid == pid || threads.isEmpty {
                        isAttached = threads.isEmpty ? false : isAttached
                        throw GraftError.processExited(pid: pid, status: ThreadStop(status: status).exitDescription)
                    }
                    throw GraftError.threadVanished(tid: tid)
                case .stopped(let signal, let event):
                    if event == 0 && signal == SIGTRAP {
                        return try registers(of: tid).rip
                    }
                    if event == Int32(GRAFT_PTRACE_EVENT_CLONE) {
                        try collectClonedThread(reportedBy: tid)
                        continue
                    }
                    if event == 0 {
                        threads[tid]?.pendingSignals.append(signal)
                    }
                    // Interrupt/group stops and held signals: step again.
                    continue
                }
            }
            throw GraftError.systemCall(name: "PTRACE_SINGLESTEP", errno: EAGAIN, context: "thread \(tid) (no step completed after 64 tries)")
        }
    }
}
