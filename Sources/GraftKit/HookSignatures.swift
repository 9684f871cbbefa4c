import GraftCore
import GraftELF
import GraftPtrace

/// Types for the hooks that print arguments or results: the function's DWARF (its file's, or a
/// separate debug file's: `DebugInfo`), else a libc prototype (`LibcPrototypes`), else none (raw
/// registers). Only for hooks at a function's entry (elsewhere the registers no longer hold the
/// arguments), and never for hooks that print neither (they keep the pc-only fast path).
extension HookEngine {
    func loadSignatures() {
        decoders = Array(repeating: nil, count: specs.count)
        for hook in armed { loadSignature(hook) }
    }

    /// The decoder of one armed hook (a watch's entry in `armed` is not a hook: skipped).
    func loadSignature(_ hook: ArmedHook) {
        guard hook.index < specs.count, hook.index < decoders.count else { return }
        let spec = specs[hook.index]
        guard spec.argumentCount > 0 || spec.returns, !spec.raw,
              let breakpoint = breakpoints[hook.address] ?? debugSlots?.hooks[hook.address], breakpoint.atFunctionEntry,
              let signature = HookEngine.signature(at: hook.address, index: index) else { return }
        decoders[hook.index] = ArgumentDecoder(signature: signature, goABI: breakpoint.goABI)
    }

    /// Before the attach (`-p`): the types of the hooks that will want them, looked up while the
    /// process runs, so that `loadSignatures`, with every thread stopped, finds libdw's files open
    /// and its address tables built (libc's separate debug file: ~0.15 s the first time).
    /// Best effort: any failure is left to the arming to report.
    static func prefetchSignatures(pid: Int32, specs: [HookSpec], journal: Journal) {
        let wanted = specs.filter { ($0.argumentCount > 0 || $0.returns) && !$0.raw }
        guard !wanted.isEmpty, let index = try? Graft.symbolIndex(pid: pid, journal: journal) else { return }
        for spec in wanted {
            guard let location = try? Location.parse(spec.location), let resolved = try? index.resolve(location) else { continue }
            _ = signature(at: resolved.address, index: index)
        }
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

    func typedResult(_ decoder: ArgumentDecoder, _ registers: Registers, tid: Int32) -> TypedArgument? {
        let vectors = decoder.resultUsesVectors ? try? tracee.vectorRegisters(of: tid) : nil
        return decoder.result(registers: registers, vectors: vectors, read: readForDecoder)
    }
}
