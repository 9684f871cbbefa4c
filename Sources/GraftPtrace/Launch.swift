import CGraftShim
import GraftCore
import Glibc

extension Tracee {
    /// Starts `arguments[0]` (searched in PATH) traced, and returns once it is stopped at its ELF
    /// entry point: the shared libraries are loaded, no constructor of the program itself and not
    /// `main` has run. `options` are set from the start, so clones, forks and exec are seen.
    ///
    /// The child stops itself (SIGSTOP) between fork and execve, graft seizes it there, then lets it
    /// exec; at the exec stop an int3 goes at AT_ENTRY (from /proc/PID/auxv), removed when hit.
    public static func launch(_ arguments: [String], options: PtraceOptions, tracer: TracerThread) throws -> Tracee {
        guard let name = arguments.first, !name.isEmpty else { throw GraftError.usage("no command to start") }
        let path = try resolveExecutable(name)
        return try tracer.run {
            let pid = spawnStopped(path: path, arguments: arguments)
            if pid < 0 { throw GraftError.systemCall(name: "fork", errno: errno, context: "starting \(name)") }
            var status: Int32 = 0
            // Its own SIGSTOP: the child is ours (forked on this thread), so a plain wait sees it.
            if graft_waitpid(pid, &status, WUNTRACED) < 0 || graft_wifstopped(status) == 0 {
                throw GraftError.usage("\(name) did not start (\(ThreadStop(status: status).exitDescription))")
            }
            if graft_ptrace(GRAFT_PTRACE_SEIZE, pid, 0, options.rawValue | UInt64(GRAFT_PTRACE_O_TRACEEXEC)) != 0 {
                kill(pid, SIGKILL)
                throw GraftError.systemCall(name: "PTRACE_SEIZE", errno: errno, context: "process \(pid) (\(name))")
            }
            kill(pid, SIGCONT)
            let tracee = Tracee(launched: pid, tracer: tracer)
            do {
                try tracee.runToExec(name: name)
                try tracee.runToEntry(name: name)
            } catch {
                kill(pid, SIGKILL)
                var ignored: Int32 = 0
                _ = graft_waitpid(pid, &ignored, 0)
                tracee.threads.removeAll()
                tracee.isAttached = false
                throw error
            }
            return tracee
        }
    }

    /// PATH search as execvp does it, before forking (no allocation after fork).
    public static func resolveExecutable(_ name: String) throws -> String {
        if name.contains("/") {
            guard access(name, X_OK) == 0 else {
                throw GraftError.usage("cannot run \(name): \(Errno.describe(errno))")
            }
            return name
        }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw GraftError.usage("cannot run \(name): not found in PATH")
    }

    private static func spawnStopped(path: String, arguments: [String]) -> Int32 {
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        var environment: [UnsafeMutablePointer<CChar>?] = []
        var index = 0
        while let entry = environ[index] {
            environment.append(strdup(entry))
            index += 1
        }
        environment.append(nil)
        defer {
            for pointer in argv { free(pointer) }
            for pointer in environment { free(pointer) }
        }
        return path.withCString { cPath in
            argv.withUnsafeMutableBufferPointer { a in
                environment.withUnsafeMutableBufferPointer { e in
                    graft_spawn_stopped(cPath, a.baseAddress!, e.baseAddress!)
                }
            }
        }
    }

    private func waitLaunched() throws -> ThreadStop {
        var status: Int32 = 0
        if graft_waitpid(pid, &status, 0) < 0 {
            throw GraftError.systemCall(name: "waitpid", errno: errno, context: "process \(pid)")
        }
        return ThreadStop(status: status)
    }

    private func runToExec(name: String) throws {
        while true {
            let stop = try waitLaunched()
            switch stop {
            case .exited(let code):
                throw GraftError.usage(code == 127 ? "cannot run \(name): execve failed" : "\(name) exited with status \(code) before it started")
            case .killed(let signal):
                throw GraftError.usage("\(name) was killed by \(signalName(signal)) before it started")
            case .stopped(let signal, let event):
                if event == Int32(GRAFT_PTRACE_EVENT_EXEC) {
                    // /proc/PID/mem opened before execve reads the old memory: open it again.
                    if memFD >= 0 { close(memFD) }
                    memFD = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
                    return
                }
                let deliver = (event == 0 && signal != SIGSTOP) ? signal : 0
                if graft_ptrace(GRAFT_PTRACE_CONT, pid, 0, UInt64(deliver)) != 0 {
                    throw GraftError.systemCall(name: "PTRACE_CONT", errno: errno, context: "process \(pid)")
                }
            }
        }
    }

    private func runToEntry(name: String) throws {
        guard let entry = Self.auxvEntry(pid) else {
            throw GraftError.usage("cannot find the entry point of \(name) in /proc/\(pid)/auxv")
        }
        let original = try readMemory(at: entry, count: 1)
        try writeText(at: entry, bytes: [0xcc])
        if graft_ptrace(GRAFT_PTRACE_CONT, pid, 0, 0) != 0 {
            throw GraftError.systemCall(name: "PTRACE_CONT", errno: errno, context: "process \(pid)")
        }
        while true {
            let stop = try waitLaunched()
            switch stop {
            case .exited, .killed:
                throw GraftError.usage("\(name) ended before reaching its entry point (\(stop.exitDescription))")
            case .stopped(let signal, let event):
                if event == 0 && signal == SIGTRAP {
                    var registers = try self.registers(of: pid)
                    if registers.rip == entry + 1 {
                        try writeText(at: entry, bytes: original)
                        registers.rip = entry
                        try setRegisters(registers, of: pid)
                        return
                    }
                }
                let deliver = event == 0 ? signal : 0
                if graft_ptrace(GRAFT_PTRACE_CONT, pid, 0, UInt64(deliver)) != 0 {
                    throw GraftError.systemCall(name: "PTRACE_CONT", errno: errno, context: "process \(pid)")
                }
            }
        }
    }

    /// AT_ENTRY (9) from /proc/PID/auxv.
    static func auxvEntry(_ pid: Int32) -> UInt64? { ProcFS.auxiliaryValue(pid, type: 9) }
}

extension ThreadStop {
    /// The status a shell would report: the exit code, or 128 + the signal.
    public var shellStatus: Int32 {
        switch self {
        case .exited(let code): return code
        case .killed(let signal): return 128 + signal
        case .stopped: return 0
        }
    }
}

extension Tracee {
    /// Launch mode, after detaching: sends `signal` (0: none) to the started command and waits for
    /// it to end; returns its shell status.
    public func reapLaunched(forwarding signal: Int32) -> Int32 {
        (try? tracer.run { () -> Int32 in
            if signal != 0 {
                kill(pid, signal)
                // A command in a job-control stop would keep the signal pending, and graft would
                // wait for it for ever: let it run to take it.
                kill(pid, SIGCONT)
            }
            var status: Int32 = 0
            while true {
                let result = graft_waitpid(pid, &status, 0)
                if result < 0 { return 0 }
                let stop = ThreadStop(status: status)
                if case .stopped = stop { continue }
                return stop.shellStatus
            }
        }) ?? 0
    }
}
