import CGraftShim
import GraftCore
import Glibc

/// System calls run inside the target by one of its stopped threads (the seam for remote calls:
/// `mmap` for scratch pages today; `dlopen` through a remote call next).
extension Tracee {
    /// Runs one system call inside the target on thread `tid` (default: the first traced thread) and
    /// returns its result; a result in -4095...-1 throws `remoteSyscallFailed`.
    ///
    /// The thread's registers are saved, rip is pointed at a `syscall` instruction that already exists
    /// in the target (vDSO first, then any executable mapping: graft writes nothing), `orig_rax` is set
    /// to -1 — otherwise the kernel's syscall-restart logic would rewind the new rip of a thread that
    /// was stopped inside a blocking call — and the thread single-steps over it. Restoring the saved
    /// registers (with the original orig_rax) lets an interrupted blocking call restart as if nothing
    /// happened: it neither sees EINTR nor restarts at the wrong pc.
    public func remoteSyscall(_ number: Int, _ arguments: [UInt64], name: String, on tid: Int32? = nil) throws -> UInt64 {
        try tracer.run {
            let thread = try tid ?? threadForRemoteCall()
            if let reason = threads[thread].flatMap(Tracee.whyNoRemoteCall) {
                throw GraftError.systemCall(name: name, errno: EBUSY, context: "remote call in thread \(thread): \(reason)")
            }
            let gadget = try findSyscallGadget()
            let args = arguments + Array(repeating: 0, count: max(0, 6 - arguments.count))
            // A seccomp filter could answer the call with SIGSYS or a kill: ask it first. A call it
            // would fail or skip is not made either: its result is known (and an errno of 0 would
            // look like a success).
            switch try seccompVerdict(of: thread, number: number, name: name, instructionPointer: gadget + 2, arguments: args) {
            case .allow, .log:
                break
            case .errno(let code) where code != 0:
                throw GraftError.remoteSyscallFailed(name: name, errno: code)
            case .trace:
                throw GraftError.remoteSyscallFailed(name: name, errno: ENOSYS)
            case let verdict:
                throw GraftError.remoteSyscallRefused(name: name, pid: pid, tid: thread, reason: "its seccomp filter would \(verdict)")
            }
            let saved = try registers(of: thread)
            var call = saved
            call.rip = gadget
            call.rax = UInt64(number)
            call.origRax = UInt64.max
            call.rdi = args[0]; call.rsi = args[1]; call.rdx = args[2]
            call.r10 = args[3]; call.r8 = args[4]; call.r9 = args[5]
            try setRegisters(call, of: thread)
            var result: UInt64 = 0
            do {
                let pc = try singleStep(thread)
                result = try registers(of: thread).rax
                try setRegisters(saved, of: thread)
                if pc != gadget + 2 {
                    throw GraftError.systemCall(name: name, errno: EFAULT, context: "remote call in thread \(thread) (stopped at \(hex(pc)))")
                }
            } catch {
                try? setRegisters(saved, of: thread)
                throw error
            }
            let signed = Int64(bitPattern: result)
            if signed < 0 && signed >= -4095 {
                throw GraftError.remoteSyscallFailed(name: name, errno: Int32(-signed))
            }
            return result
        }
    }

    /// mmap inside the target; returns the mapped address.
    public func remoteMmap(address: UInt64 = 0, length: UInt64, protection: Int32, flags: Int32) throws -> UInt64 {
        try remoteSyscall(9, [address, length, UInt64(UInt32(bitPattern: protection)), UInt64(UInt32(bitPattern: flags)), UInt64.max, 0], name: "mmap")
    }

    public func remoteMunmap(address: UInt64, length: UInt64) throws {
        _ = try remoteSyscall(11, [address, length], name: "munmap")
    }

    public func remoteMprotect(address: UInt64, length: UInt64, protection: Int32) throws {
        _ = try remoteSyscall(10, [address, length, UInt64(UInt32(bitPattern: protection))], name: "mprotect")
    }

    /// The address of a `0f 05` (syscall) byte pair in an executable mapping. Executing from there
    /// decodes a syscall whatever instruction the bytes belong to.
    func findSyscallGadget() throws -> UInt64 {
        if let gadget = syscallGadget { return gadget }
        let maps = ProcFS.readFile("/proc/\(pid)/maps") ?? ""
        var candidates: [(start: UInt64, end: UInt64, isVDSO: Bool)] = []
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 5, fields[1].contains("x") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16) else { continue }
            let path = fields.count >= 6 ? String(fields[5]) : ""
            if path == "[vsyscall]" { continue }
            candidates.append((start, end, path == "[vdso]"))
        }
        candidates.sort { $0.isVDSO && !$1.isVDSO }
        for candidate in candidates {
            let length = Int(min(candidate.end - candidate.start, 4 << 20))
            guard let bytes = try? readMemory(at: candidate.start, count: length) else { continue }
            var i = 0
            while i + 1 < bytes.count {
                if bytes[i] == 0x0f && bytes[i + 1] == 0x05 {
                    syscallGadget = candidate.start + UInt64(i)
                    return candidate.start + UInt64(i)
                }
                i += 1
            }
        }
        throw GraftError.systemCall(name: "remote syscall", errno: ENOENT, context: "process \(pid): no syscall instruction found in its executable mappings")
    }

    /// Why a thread cannot run a remote system call, or nil: stopped inside an in-syscall ptrace
    /// event (see `ThreadRecord.inSyscallEvent`), or in a group stop — a thread single-stepped out
    /// of its group stop is in a plain trap stop afterwards, where PTRACE_LISTEN fails (EIO): it
    /// would then stay stopped for good, SIGCONT or not.
    static func whyNoRemoteCall(_ record: ThreadRecord) -> String? {
        if record.inSyscallEvent { return "it is stopped inside a clone, fork or exec" }
        if record.groupStopped { return "it is in a group stop (SIGSTOP)" }
        return nil
    }

    /// A thread that can run a remote system call (`whyNoRemoteCall`), the main thread first.
    public func threadForRemoteCall() throws -> Int32 {
        func usable(_ record: ThreadRecord) -> Bool { Tracee.whyNoRemoteCall(record) == nil }
        if let main = threads[pid], usable(main) { return pid }
        if let tid = threads.filter({ usable($0.value) }).keys.min() { return tid }
        if threads.isEmpty { throw exitError() }
        if threads.values.contains(where: \.groupStopped) {
            throw GraftError.systemCall(name: "remote syscall", errno: EBUSY,
                                        context: "process \(pid) is stopped (SIGSTOP, Ctrl-Z): graft cannot run a system call in it without resuming it")
        }
        throw GraftError.systemCall(name: "remote syscall", errno: EBUSY,
                                    context: "process \(pid): every thread is stopped inside a clone, fork or exec; try again")
    }
}
