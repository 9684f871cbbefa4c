import GraftCore
import GraftELF
import GraftMachine

/// A LOCATION resolved to a function in an executable file mapping: the start of both a patch's plan
/// and a hook's (`PatchPlanner.plan`, `HookEngine.plan`).
struct LocatedFunction {
    let resolved: ResolvedLocation
    let module: LoadedModule
    let symbol: ELFSymbol
    /// The function's first byte in memory.
    let start: UInt64
    /// Set when the LOCATION named an IFUNC: the IFUNC (`libc.so.6!strlen`), and this is the
    /// implementation the process uses (`__strlen_avx2`).
    var ifunc: String? = nil
    /// Where the implementation was learnt (`IFUNCChoice.source`).
    var ifuncSource: String? = nil
    /// Code without a symbol (a stripped file): `symbol` is made up from its `.eh_frame` range.
    var unnamed = false
    /// `module!function`; `module+0xOFF` for code without a symbol.
    var function: String { unnamed ? "\(module.name)+\(hex(start &- module.start))" : "\(module.name)!\(symbol.displayName)" }

    /// A function of `module` without a symbol, at runtime `start` and `size` bytes long (from
    /// `.eh_frame`, or a bound): a made-up symbol named as graft prints it, `module+0xOFF`.
    static func unnamed(_ resolved: ResolvedLocation, module: LoadedModule, start: UInt64, size: UInt64, ifunc: String? = nil,
                        ifuncSource: String? = nil) -> LocatedFunction {
        let name = "\(module.name)+\(hex(start &- module.start))"
        let symbol = ELFSymbol(name: name, value: module.linkAddress(start), size: size, kind: .function, isGlobal: false, fromDynsym: false)
        // `resolved` keeps no symbol: it prints as `module+0xOFF` of its own address.
        return LocatedFunction(resolved: ResolvedLocation(address: resolved.address, module: module, symbol: nil, symbolAddress: start,
                                                          unnamedFunction: CodeRange(start: start, size: size)),
                               module: module, symbol: symbol, start: start, ifunc: ifunc, ifuncSource: ifuncSource, unnamed: true)
    }
}

/// A located function with its code decoded from the ELF file, and the instruction graft will change.
struct CodeSite {
    let located: LocatedFunction
    /// Where the new bytes (or the int3) go: the LOCATION, or the instruction after a kept `endbr64`.
    let address: UInt64
    /// The LOCATION was the function's entry and its `endbr64` stays in place (an indirect branch
    /// must land on it): `address` is the instruction after it.
    let keptEndbr64: Bool
    /// The function's bytes from the file; nil when the file could not be read.
    let fileCode: [UInt8]?
    /// What was decoded: `fileCode`, else memory.
    let code: [UInt8]
    let instructions: [Instruction]
    let elf: ELFFile?

    var start: UInt64 { located.start }
    var decodedEnd: UInt64 { instructions.last?.end ?? located.start }

    /// The file's bytes at `address..<address + count`, nil without the file.
    func fileBytes(at address: UInt64, count: Int) -> [UInt8]? {
        fileCode.map { Array($0[Int(address - start)..<Int(address - start) + count]) }
    }

    /// The index of the instruction starting at `address` in the decode (from the function's start),
    /// or the refusal: not an instruction boundary (naming its neighbours), or past what decodes.
    /// `function` names the function in the error.
    func instructionIndex(at address: UInt64, function: String) throws -> Int {
        try CodeSite.instructionIndex(at: address, in: instructions, function: function, start: start)
    }

    static func instructionIndex(at address: UInt64, in instructions: [Instruction], function: String, start: UInt64) throws -> Int {
        if let index = instructions.firstIndex(where: { $0.address == address }) { return index }
        let decodedEnd = instructions.last?.end ?? start
        guard address < decodedEnd else { throw GraftError.undecodableInstruction(address: decodedEnd, function: function) }
        let previous = instructions.last(where: { $0.address < address })?.address ?? start
        let next = instructions.first(where: { $0.address > address })?.address ?? decodedEnd
        throw GraftError.notInstructionBoundary(address: address, function: function, previous: previous, next: next)
    }

    /// The live graft patch of the journal whose bytes overlap `range`, if any.
    static func appliedPatch(in journal: JournalContents, overlapping range: Range<UInt64>) -> PatchRecord? {
        journal.patches.first { $0.state != .reverted && $0.range.overlaps(range) }
    }
}

/// The one code-site resolver: resolve the LOCATION → an executable file mapping → a function symbol
/// (an IFUNC: the implementation this process uses, `IFUNCResolution.swift`) → decode it from the file (memory may hold someone's breakpoint; the file is
/// pristine) → keep `endbr64`. The instruction boundary, the journal and the memory comparison are
/// `CodeSite`'s; each caller orders them and words its refusals.
struct CodeSiteResolver {
    let index: SymbolIndex
    let disassembler: Disassembler
    /// Memory of the running target (`/proc/PID/mem`, or the attached tracee).
    let readMemory: (UInt64, Int) throws -> [UInt8]
    /// Runs an IFUNC's resolver in the target, where a thread may run it (`IFUNCResolution.swift`).
    var callResolver: IFUNCResolverCall? = nil

    /// `use` completes "cannot … an IFUNC": "patching", "hooking".
    func locate(_ text: String, use: String) throws -> LocatedFunction {
        let resolved = try index.resolve(try Location.parse(text))
        try requireExecutable(resolved.address, asTarget: false)
        if resolved.symbol == nil, let module = resolved.module, let range = resolved.unnamedFunction {
            // Stripped code: the function `.eh_frame` describes bounds it (`libc.so.6+0x271d0`).
            return LocatedFunction.unnamed(resolved, module: module, start: range.start, size: range.size)
        }
        guard let module = resolved.module, let symbol = resolved.symbol, let start = resolved.symbolAddress else {
            throw GraftError.noSymbolAt(address: resolved.address)
        }
        let located = LocatedFunction(resolved: resolved, module: module, symbol: symbol, start: start)
        if symbol.kind == .ifunc {
            // The implementation this process uses instead of the resolver (`IFUNCResolution.swift`).
            guard resolved.address == start else {
                throw GraftError.ifuncSymbol(function: located.function, use: use, pid: index.pid)
            }
            let choice = try implementation(ofIFUNC: symbol, in: module, function: located.function, use: use)
            let chosen = choice.address
            guard let implementation = index.symbolize(chosen), let chosenModule = implementation.module else {
                throw GraftError.ifuncSymbol(function: located.function, use: use, pid: index.pid)
            }
            try requireExecutable(chosen, asTarget: false)
            if let implementationSymbol = implementation.symbol, let implementationStart = implementation.symbolAddress,
               implementationSymbol.kind != .ifunc, implementationStart == chosen {
                return LocatedFunction(resolved: implementation, module: chosenModule, symbol: implementationSymbol,
                                       start: implementationStart, ifunc: located.function, ifuncSource: choice.source)
            }
            // A stripped library names no implementation: it is `module+0xOFF`, bounded by its
            // `.eh_frame` function, else by the next function graft knows there (at most 4 KiB).
            let link = chosenModule.linkAddress(chosen)
            let size: UInt64
            if let range = implementation.unnamedFunction, range.start == chosen {
                size = range.size
            } else {
                let next = (try? chosenModule.elf())?.functionSymbols.first(where: { $0.value > link })?.value ?? link + 4096
                size = min(next - link, 4096)
            }
            return LocatedFunction.unnamed(ResolvedLocation(address: chosen, module: chosenModule, symbol: nil, symbolAddress: nil),
                                           module: chosenModule, start: chosen, size: size, ifunc: located.function, ifuncSource: choice.source)
        }
        return located
    }

    /// Decodes `count` bytes of the function from its start (from the file when it can be read) and
    /// moves past an `endbr64` at the entry.
    func decode(_ located: LocatedFunction, count: Int) throws -> CodeSite {
        let start = located.start
        let elf = try? located.module.elf()
        let fileCode = elf?.bytes(atVirtualAddress: located.module.linkAddress(start), count: count)
        let code = try fileCode ?? readMemory(start, count)
        var address = located.resolved.address
        var keptEndbr64 = false
        if address == start, code.starts(with: X86_64.endbr64) {
            address += UInt64(X86_64.endbr64.count)
            keptEndbr64 = true
        }
        return CodeSite(located: located, address: address, keptEndbr64: keptEndbr64, fileCode: fileCode, code: code,
                        instructions: disassembler.decode(code, at: start), elf: elf)
    }

    /// An address to patch or hook must be in an executable file mapping; a jump target only executable.
    func requireExecutable(_ address: UInt64, asTarget: Bool) throws {
        guard let mapping = index.mapping(containing: address) else {
            throw GraftError.addressNotMapped(address: address)
        }
        let description = "\(mapping.permissions) \(mapping.path.isEmpty ? "anonymous" : mapping.path)"
        if asTarget {
            guard mapping.executable else { throw GraftError.targetNotExecutable(address: address, mapping: description) }
        } else {
            // The vDSO is no file, but graft reads its image (`VDSO`) and may write it like text:
            // ptrace's forced write gives the process its own copy of the page.
            guard mapping.executable, mapping.isFileBacked || mapping.path == VDSO.mapsPath else {
                throw GraftError.addressNotExecutable(address: address, mapping: description)
            }
        }
    }
}
