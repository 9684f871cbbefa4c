import GraftCore
import GraftELF
import GraftPtrace

/// Types for the hooks that print arguments or results: a libc prototype (`LibcPrototypes`), else
/// the function's DWARF (its file's, or a separate debug file's: `DebugInfo`), else none (raw
/// registers). Only for hooks at a function's entry (elsewhere the registers no longer hold the
/// arguments), and never for hooks that print neither (they keep the pc-only fast path).
extension HookEngine {
    /// The decoder of `hook`, looked up at its first reported hit (only that thread is stopped then,
    /// and a hook armed later, in a library loaded later, or in the debug registers, is covered
    /// alike); cached, a miss too. nil: no types (or `--raw`, or not at a function's entry).
    func decoder(_ hook: Int, _ breakpoint: Breakpoint) -> ArgumentDecoder? {
        if let cached = decoders[hook] { return cached }
        let spec = specs[hook]
        var made: ArgumentDecoder?
        if spec.argumentCount > 0 || spec.returns, !spec.raw, breakpoint.atFunctionEntry,
           !breakpoint.stackArguments,  // Go ABI0: raw stack words, no register assignment to type
           let signature = HookEngine.signature(at: breakpoint.address, index: index) {
            made = ArgumentDecoder(signature: signature, goABI: breakpoint.goABI)
        }
        decoders[hook] = .some(made)
        return made
    }

    /// Before the attach (`-p`): the types of the hooks that will want them, looked up while the
    /// process runs, so that the lookup at the first hit (`decoder`), with a thread stopped, finds libdw's files open
    /// and its address tables built (libc's separate debug file: ~0.15 s the first time).
    /// Best effort: any failure is left to the arming to report.
    /// Returns the parameter names found (what `--filter` may name). `all`: every spec, not only
    /// those that print arguments or results (a filter on names reads them).
    @discardableResult
    static func prefetchSignatures(pid: Int32, specs: [HookSpec], journal: Journal, all: Bool = false) -> Set<String> {
        parameterNames(pid: pid, specs: specs, journal: journal, all: all).names
    }

    /// `prefetchSignatures`, and whether every function named was found in the process now
    /// (`complete`: false when one is in a library not loaded yet, whose types are learnt at its
    /// first hit).
    static func parameterNames(pid: Int32, specs: [HookSpec], journal: Journal, all: Bool = false) -> (names: Set<String>, complete: Bool) {
        let wanted = specs.filter { (all || $0.argumentCount > 0 || $0.returns) && !$0.raw }
        guard !wanted.isEmpty, let index = try? Graft.symbolIndex(pid: pid, journal: journal) else { return ([], wanted.isEmpty) }
        var names: Set<String> = []
        var complete = true
        for spec in wanted {
            guard let location = try? Location.parse(spec.location), let resolved = try? index.resolve(location) else {
                complete = false
                continue
            }
            guard let signature = signature(at: resolved.address, index: index) else { continue }
            for (i, parameter) in signature.parameters.enumerated() { names.insert(parameter.name.isEmpty ? "arg\(i)" : parameter.name) }
        }
        return (names, complete)
    }

    /// The signature of the function whose entry is at runtime `address` (or 4 bytes after it, past
    /// an endbr64).
    static func signature(at address: UInt64, index: SymbolIndex) -> FunctionSignature? {
        guard let located = index.symbolize(address), let module = located.module, let symbol = located.symbol,
              let start = located.symbolAddress, !module.isDeleted else { return nil }
        let root = module.root == "/" || module.root.isEmpty ? "" : (module.root.hasSuffix("/") ? String(module.root.dropLast()) : module.root)
        // libc: the built-in prototype first, even when libc's DWARF is installed (libc6-dbg): it
        // decodes flags (`O_RDONLY|O_CLOEXEC`) and buffers where DWARF knows only `int` and `void *`.
        if isLibc(module.name), let prototype = LibcPrototypes.signature(for: symbol.name) { return prototype }
        let buildID = (try? module.elf())?.buildID
        return DebugInfo.signature(file: root + module.path, buildID: buildID, linkAddress: module.linkAddress(start))
    }

    /// glibc (`libc.so.6`), musl (`ld-musl-x86_64.so.1`, `libc.musl-x86_64.so.1`).
    static func isLibc(_ name: String) -> Bool {
        name.hasPrefix("libc.so") || name.hasPrefix("libc-") || name.hasPrefix("libc.musl") || name.hasPrefix("ld-musl")
    }

    /// Reads target memory for the decoders; nil when it cannot be read.
    func readForDecoder(_ address: UInt64, _ count: Int) -> [UInt8]? {
        try? tracee.readMemory(at: address, count: count)
    }
}

extension HookEngine {
    /// The typed arguments of a hit: the xmm registers only when a parameter is a float (one
    /// PTRACE_GETFPREGS), target memory only for strings, buffers and stack slots.
    func typedArguments(_ decoder: ArgumentDecoder, limit: Int, _ registers: Registers, tid: Int32) -> [TypedArgument] {
        let vectors = decoder.argumentsUseVectors ? try? tracee.vectorRegisters(of: tid) : nil
        return decoder.arguments(limit: limit, registers: registers, vectors: vectors, read: readForDecoder)
    }

    /// The result (the first, for Go) and, when a Go function has several, all of them.
    func typedResults(_ decoder: ArgumentDecoder, _ registers: Registers, tid: Int32) -> (TypedArgument?, [TypedArgument]?) {
        let vectors = decoder.resultUsesVectors ? try? tracee.vectorRegisters(of: tid) : nil
        guard decoder.goABI, decoder.signature.results.count > 1 else {
            return (decoder.result(registers: registers, vectors: vectors, read: readForDecoder), nil)
        }
        let all = decoder.results(registers: registers, vectors: vectors, read: readForDecoder)
        return (all.first, all)
    }
}
