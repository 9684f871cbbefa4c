import Glibc

/// Every error graft reports, one case per cause. `description` is the one-line message the CLI prints
/// after `graft: error: `; it names the thing, the cause, and where possible what to do next.
public enum GraftError: Error, Equatable, Sendable, CustomStringConvertible {
    // Processes and permissions
    case noSuchProcess(pid: Int32)
    case zombie(pid: Int32)
    case permissionDenied(pid: Int32, reason: String)
    case alreadyTraced(pid: Int32, tracer: Int32, tracerName: String)
    case processExited(pid: Int32, status: String)
    case threadVanished(tid: Int32)
    case systemCall(name: String, errno: Int32, context: String)
    case remoteSyscallFailed(name: String, errno: Int32)
    case remoteSyscallRefused(name: String, pid: Int32, tid: Int32, reason: String)
    /// A function called inside the target (`Tracee.remoteCall`) did not return normally.
    case remoteCallFailed(name: String, pid: Int32, tid: Int32, reason: String)

    // Libraries and trampolines
    /// A library graft will not load or use, before anything is written.
    case libraryRefused(path: String, reason: String)
    /// The target's loader refused the library: its own message; nothing else changed.
    case libraryLoadFailed(path: String, pid: Int32, message: String)
    /// An instruction of the overwritten bytes cannot move into a trampoline.
    case cannotRelocate(function: String, reason: String)

    // Symbols and locations
    case invalidLocation(text: String, reason: String)
    case moduleNotFound(name: String, available: [String])
    case ambiguousModule(name: String, candidates: [String])
    case symbolNotFound(name: String, module: String?, suggestions: [String])
    /// Not found where a stripped file (no `.symtab`) may well hold it without a name.
    case symbolNotFoundStripped(name: String, module: String, suggestions: [String])
    case ambiguousSymbol(name: String, candidates: [String])
    case noSymbolAt(address: UInt64)
    case elfFormat(path: String, reason: String)

    // Memory and code
    case addressNotMapped(address: UInt64)
    case addressNotExecutable(address: UInt64, mapping: String)
    case notInstructionBoundary(address: UInt64, function: String, previous: UInt64, next: UInt64)
    case undecodableInstruction(address: UInt64, function: String)
    case functionTooShort(function: String, size: Int, needed: Int)
    case pastFunctionEnd(address: UInt64, function: String, start: UInt64, size: UInt64)
    case stackChangedBeforePatch(location: String, function: String, instruction: String, at: UInt64, jump: Bool)
    case coldPart(function: String, parent: String)
    /// A jump target after a stack change or in a `.cold` part: `reason` says which.
    case targetMidFunction(target: String, reason: String)
    /// A jump target inside the bytes the patch overwrites (its own entry included).
    case targetInsidePatch(target: String, start: UInt64, end: UInt64)
    /// An `STT_GNU_IFUNC` symbol as the LOCATION, the --to target or a hook.
    case ifuncSymbol(function: String, use: String, pid: Int32?)
    /// An IFUNC whose implementation graft could not learn: no IRELATIVE slot, no module's bound GOT
    /// slot, and its resolver could not be called in the process (`reason`).
    case ifuncUnresolved(function: String, use: String, reason: String, pid: Int32?)
    case threadInsidePatch(tid: Int32, pc: UInt64)
    case returnAddressInsidePatch(tid: Int32, returnAddress: UInt64)
    case branchIntoPatch(from: UInt64, to: UInt64, function: String)
    case unexpectedBytes(address: UInt64, expected: [UInt8], found: [UInt8], hint: String)
    case alreadyPatched(address: UInt64, id: Int, function: String, pid: Int32)
    case targetNotExecutable(address: UInt64, mapping: String)

    // Journal
    case patchNotFound(id: Int, pid: Int32)
    case journal(path: String, reason: String)

    // Hooks.
    case hookRefused(function: String, address: UInt64, reason: String)

    // Program files (`graft patch --file`).
    /// A file patch or revert refused before anything was written: the file, and why.
    case fileRefused(path: String, reason: String)
    /// The process runs code graft does not attach to (a 32-bit i386 program): `code` names it.
    case foreignProcess(pid: Int32, code: String)
    /// Data the function's code reads (an ARM/AArch64 literal pool word, x86_64 rip-relative data) lies
    /// inside the bytes a patch would overwrite; `reader` is the instruction reading it, when one does.
    case literalInPatch(function: String, data: UInt64, reader: String?, start: UInt64, end: UInt64)

    /// A signal came before the first write: the operation was given up, nothing changed.
    case interrupted(signal: Int32)

    // Catch-all for usage errors found after parsing.
    case usage(String)

    public var description: String {
        switch self {
        case .noSuchProcess(let pid):
            return "no process with PID \(pid) (check the PID with `ps -p \(pid)`)"
        case .zombie(let pid):
            return "process \(pid) is a zombie: it has exited and waits for its parent to reap it"
        case .permissionDenied(let pid, let reason):
            return "permission denied to trace process \(pid): \(reason)"
        case .alreadyTraced(let pid, let tracer, let name):
            return "process \(pid) is already traced by \(tracer) (\(name)); detach that tracer first"
        case .processExited(let pid, let status):
            return "process \(pid) exited during the operation (\(status))"
        case .threadVanished(let tid):
            return "thread \(tid) vanished during the operation"
        case .systemCall(let name, let err, let context):
            return "\(name) failed for \(context): \(Errno.describe(err))"
        case .remoteSyscallFailed(let name, let err):
            return "\(name) inside the target failed: \(Errno.describe(err))"
        case .remoteCallFailed(let name, let pid, let tid, let reason):
            return "the call of \(name) inside process \(pid) (thread \(tid)) failed: \(reason)"
        case .libraryRefused(let path, let reason):
            return "graft will not load \(path): \(reason); nothing was written"
        case .libraryLoadFailed(let path, let pid, let message):
            return "process \(pid) could not load \(path): \(message); nothing else was changed"
        case .cannotRelocate(let function, let reason):
            return "cannot patch \(function) with a way back to the original: \(reason); nothing was written"
        case .remoteSyscallRefused(let name, let pid, let tid, let reason):
            return "graft will not call \(name) inside process \(pid) (thread \(tid)): \(reason); nothing was called"
        case .invalidLocation(let text, let reason):
            return "invalid location '\(text)': \(reason) (use NAME, MODULE:NAME, LOCATION+OFFSET or 0xADDRESS)"
        case .moduleNotFound(let name, let available):
            // Every module (issue 14: the list was cut after 8, hiding the one the user meant).
            let list = available.prefix(60).joined(separator: ", ")
            return "no module '\(name)' is mapped in the process" + (list.isEmpty ? "" : "; mapped: \(list)\(available.count > 60 ? ", … (\(available.count) in all)" : "")")
        case .ambiguousModule(let name, let candidates):
            return "module '\(name)' matches several mapped files: \(candidates.joined(separator: ", ")); give the full file name"
        case .symbolNotFound(let name, let module, let suggestions):
            let whereText = module.map { " in \($0)" } ?? ""
            let hint = suggestions.isEmpty ? "" : "; did you mean \(suggestions.prefix(5).joined(separator: ", "))?"
            return "no function '\(name)'\(whereText)\(hint)"
        case .symbolNotFoundStripped(let name, let module, let suggestions):
            let hint = suggestions.isEmpty ? "" : "; did you mean \(suggestions.prefix(5).joined(separator: ", "))?"
            return "no function '\(name)': \(module) is stripped (no .symtab: only its exported functions have names); " +
                "name its code as \(module)+0xOFF, the form graft prints for code without a name\(hint)"
        case .ambiguousSymbol(let name, let candidates):
            return "'\(name)' is defined in several modules: \(candidates.joined(separator: ", ")); name one as MODULE:\(name)"
        case .noSymbolAt(let address):
            return "no function symbol covers \(hex(address)); graft cannot check the instruction boundary or the function size there"
        case .elfFormat(let path, let reason):
            return "cannot read ELF file \(path): \(reason)"
        case .addressNotMapped(let address):
            return "address \(hex(address)) is not mapped in the process"
        case .addressNotExecutable(let address, let mapping):
            return "address \(hex(address)) is not in an executable file mapping (\(mapping))"
        case .notInstructionBoundary(let address, let function, let previous, let next):
            return "\(hex(address)) is not an instruction boundary in \(function) (instructions start at \(hex(previous)) and \(hex(next)))"
        case .undecodableInstruction(let address, let function):
            return "cannot decode the instruction at \(hex(address)) in \(function)"
        case .pastFunctionEnd(let address, let function, let start, let size):
            return "\(hex(address)) is past the end of \(function), which is \(size) byte\(size == 1 ? "" : "s") long (\(hex(start))..<\(hex(start + size)))"
        case .stackChangedBeforePatch(let location, let function, let instruction, let at, let jump):
            let what = jump ? "the jump's target would return" : "the stub's ret would return"
            return "refusing to patch \(location): '\(instruction)' at \(hex(at)) in \(function) moves the stack pointer before that point, so \(what) to the wrong address and crash the process; patch the function's entry, or pass --mid-function if the code there expects the stack as it is"
        case .coldPart(let function, let parent):
            return "refusing to patch \(function): it is a part of \(parent) the compiler split off (.cold), entered by a jump inside \(parent)'s frame, so a stub or a jump there would return to the wrong address; patch \(parent), or pass --mid-function if the code there expects the stack as it is"
        case .targetMidFunction(let target, let reason):
            return "refusing to jump to \(target): \(reason), so the code there would return through a frame the caller never built and crash the process; jump to a function's entry, or pass --mid-function if the code there expects the stack as the caller leaves it"
        case .targetInsidePatch(let target, let start, let end):
            return "the --to target \(target) is inside the bytes the patch overwrites (\(hex(start))..<\(hex(end))): the jump would land in itself; pick a target outside them"
        case .ifuncSymbol(let function, let use, let pid):
            let module = function.split(separator: "!").first.map(String.init) ?? "MODULE"
            let name = function.split(separator: "!").last.map(String.init) ?? function
            return "\(function) is an IFUNC (STT_GNU_IFUNC): its code is the resolver the dynamic loader runs once to choose an implementation, not the code callers reach, so \(use) it would not do what you mean; use the implementation it chose, by name where the module's symbol table lists it (`graft symbols -p \(pid.map { String($0) } ?? "PID") '\(module):*\(name)*'`) or by 0xADDRESS"
        case .ifuncUnresolved(let function, let use, let reason, let pid):
            let module = function.split(separator: "!").first.map(String.init) ?? "MODULE"
            let name = function.split(separator: "!").last.map(String.init) ?? function
            let verb = use.hasPrefix("hook") ? "hook" : "patch"
            return "\(function) is an IFUNC that no loaded module has bound yet and graft could not call its resolver: \(reason); \(verb) it once the program has called \(name) (its GOT slot then holds the loader's choice), or \(verb) the implementation itself, by name where the module's symbol table lists it (`graft symbols -p \(pid.map { String($0) } ?? "PID") '\(module):*\(name)*'`) or by 0xADDRESS"
        case .interrupted(let signal):
            return "interrupted by \(signalName(signal)) before anything was written; the process was not changed"
        case .functionTooShort(let function, let size, let needed):
            return "\(function) is \(size) byte\(size == 1 ? "" : "s") long from the patch point, the patch needs \(needed); refusing to spill into the next function"
        case .threadInsidePatch(let tid, let pc):
            return "thread \(tid) is executing inside the bytes to be overwritten (pc \(hex(pc))) and could not be stepped out; try again"
        case .returnAddressInsidePatch(let tid, let ret):
            return "thread \(tid) has a return address \(hex(ret)) inside the bytes to be overwritten; try again when that call has returned"
        case .branchIntoPatch(let from, let to, let function):
            return "the branch at \(hex(from)) in \(function) jumps to \(hex(to)), inside the bytes to be overwritten"
        case .unexpectedBytes(let address, let expected, let found, let hint):
            return "the bytes at \(hex(address)) are \(hexBytes(found)), expected \(hexBytes(expected))\(hint.isEmpty ? "" : "; \(hint)")"
        case .alreadyPatched(let address, let id, let function, let pid):
            return "\(function) at \(hex(address)) is already patched by graft (patch \(id)); run `graft unpatch -p \(pid) \(id)` first"
        case .targetNotExecutable(let address, let mapping):
            return "jump target \(hex(address)) is not in an executable mapping (\(mapping))"
        case .patchNotFound(let id, let pid):
            return "no patch \(id) recorded for process \(pid) (see `graft list -p \(pid)`)"
        case .journal(let path, let reason):
            return "journal \(path): \(reason)"
        case .hookRefused(let function, let address, let reason):
            return "cannot hook \(function) at \(hex(address)): \(reason)"
        case .fileRefused(let path, let reason):
            return "refusing to change \(path): \(reason)"
        case .foreignProcess(let pid, let code):
            return "process \(pid) runs \(code) code; graft attaches to x86_64 processes only (a program file of x86_64, i386, ARM or AArch64 can be patched with `graft patch --file`)"
        case .literalInPatch(let function, let data, let reader, let start, let end):
            let read = reader.map { " read by \($0)" } ?? ""
            return "\(function) keeps data at \(hex(data)) (a literal pool\(read)) inside the bytes the patch would overwrite (\(hex(start))..<\(hex(end))): the code reading it would get the jump's bytes; refusing (patch a function whose first instructions are code)"
        case .usage(let text):
            return text
        }
    }
}

/// `0x` + lowercase hex, the format of every address graft prints.
public func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

/// Bytes as space-separated lowercase hex pairs: `e9 12 34 56 78`.
public func hexBytes(_ bytes: [UInt8]) -> String {
    bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: " ")
}

/// Bytes as one lowercase hex string without separators, the JSON form: `e912345678`.
public func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}

/// Parses `e912345678` or `e9 12 34` back into bytes.
/// The value of a `0x…` hex address as `hex(_:)` writes it (the journal's), nil for anything else.
public func hexValue(_ text: String) -> UInt64? {
    text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : nil
}

public func bytes(fromHex text: String) -> [UInt8]? {
    let digits = text.filter { !$0.isWhitespace }
    guard digits.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(digits.count / 2)
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        guard let byte = UInt8(digits[index..<next], radix: 16) else { return nil }
        out.append(byte)
        index = next
    }
    return out
}

/// errno values by name: graft never prints a bare errno number.
public enum Errno {
    private static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO", ENXIO: "ENXIO",
        E2BIG: "E2BIG", ENOEXEC: "ENOEXEC", EBADF: "EBADF", ECHILD: "ECHILD", EAGAIN: "EAGAIN",
        ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST",
        ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", ENFILE: "ENFILE",
        EMFILE: "EMFILE", ENOSPC: "ENOSPC", ESPIPE: "ESPIPE", EROFS: "EROFS", EPIPE: "EPIPE",
        ERANGE: "ERANGE", ENOSYS: "ENOSYS", ENOTSUP: "ENOTSUP", ETIMEDOUT: "ETIMEDOUT", ENAMETOOLONG: "ENAMETOOLONG",
    ]

    /// `ESRCH (No such process)`.
    public static func describe(_ code: Int32) -> String {
        let text = String(cString: strerror(code))
        if let name = names[code] { return "\(name) (\(text))" }
        return text
    }
}

/// SIGTERM, SIGUSR1, … for messages.
public func signalName(_ signal: Int32) -> String {
    let names: [Int32: String] = [
        SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGTRAP: "SIGTRAP",
        SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGUSR1: "SIGUSR1",
        SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2", SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM", SIGTERM: "SIGTERM",
        SIGCHLD: "SIGCHLD", SIGCONT: "SIGCONT", SIGSTOP: "SIGSTOP", SIGTSTP: "SIGTSTP", SIGTTIN: "SIGTTIN",
        SIGTTOU: "SIGTTOU", SIGURG: "SIGURG", SIGXCPU: "SIGXCPU", SIGXFSZ: "SIGXFSZ", SIGVTALRM: "SIGVTALRM",
        SIGPROF: "SIGPROF", SIGWINCH: "SIGWINCH", SIGIO: "SIGIO", SIGSYS: "SIGSYS",
    ]
    if let name = names[signal] { return name }
    return "signal \(signal)"
}
