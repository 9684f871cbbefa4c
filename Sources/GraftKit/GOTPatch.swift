import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace

/// A redirection of one module's import of a function: its GOT slot (`.rela.plt` JUMP_SLOT or
/// `.rela.dyn` GLOB_DAT) gets another address, so that module's calls — and only that module's — go
/// there. One aligned 8-byte word: no instruction is touched, nothing to relocate.
public struct GOTPatchPlan: Sendable {
    public let instance: ProcessInstance
    /// The importing module (`nginx`) and its path.
    public let module: String
    public let modulePath: String
    public let buildID: String?
    public let symbol: String
    /// The slot's address and its relocation (`R_X86_64_JUMP_SLOT`, `R_X86_64_GLOB_DAT`).
    public let slot: UInt64
    public let relocation: String
    /// What the slot holds now, and whether the loader has bound it (a lazy slot not yet bound
    /// holds an address in the module's own PLT).
    public let currentValue: UInt64
    public let bound: Bool
    /// The function the module's calls reach today: the slot's value once bound; for a lazy slot
    /// the definition the loader would bind (the first global default-version definition).
    public let original: ResolvedLocation
    public let target: ResolvedLocation
    /// `graft_original_<to>` of the target's library, set to `original` before the slot is written.
    public let originalPointer: UInt64?
    public let originalPointerSymbol: String?
    public let library: LibraryRecord?
    public let checks: [String]
    /// The dynamic loader's code (a lazy slot is not written while a thread is in it).
    let loaderCode: [Range<UInt64>]

    public var originalBytes: [UInt8] { littleEndian(currentValue) }
    public var newBytes: [UInt8] { littleEndian(target.address) }
}

/// What `Graft.patchGOT` did to one slot.
public struct GOTPatchOutcome: Sendable {
    public let plan: GOTPatchPlan
    public let record: PatchRecord?
    public let dryRun: Bool
    public var stopWindowNanoseconds: UInt64 = 0
}

extension Graft {
    // MARK: - GOT

    /// Redirects `MODULE:SYMBOL`'s import slot(s) to `to` (with `library`: loaded first, `to` names
    /// its function). Every slot of that symbol in that module (usually one) is a patch of its own
    /// in the journal; `unpatch` writes back what was there.
    public func patchGOT(pid: Int32, slot text: String, to: String, library: String? = nil, dryRun: Bool = false) throws -> [GOTPatchOutcome] {
        guard let colon = text.firstIndex(of: ":"), colon != text.startIndex, text.index(after: colon) != text.endIndex else {
            throw GraftError.usage("--got takes MODULE:SYMBOL, the module whose calls to SYMBOL are redirected (e.g. nginx:write), not '\(text)'")
        }
        let moduleName = String(text[..<colon]), symbol = String(text[text.index(after: colon)...])
        return try withLibraryTarget(pid: pid, to: to, library: library, dryRun: dryRun) { instance, contents, target, libraryRecord in
            let plans = try planGOT(instance: instance, contents: contents, moduleName: moduleName, symbol: symbol, to: target, library: libraryRecord)
            if dryRun { return plans.map { GOTPatchOutcome(plan: $0, record: nil, dryRun: true) } }
            var outcomes: [GOTPatchOutcome] = []
            for plan in plans {
                if let signal = cancellation?() { throw GraftError.interrupted(signal: signal) }
                outcomes.append(try applyGOT(plan, contents: &contents))
            }
            return outcomes
        }
    }

    /// Every check, before anything is written.
    func planGOT(instance: ProcessInstance, contents: JournalContents, moduleName: String, symbol: String, to: String,
                 library: LibraryRecord?) throws -> [GOTPatchPlan] {
        let pid = instance.pid
        let index = try symbolIndex(pid: pid, contents: contents)
        let module = try index.module(named: moduleName)
        let slots = try gotSlots(of: symbol, in: module, index: index, contents: contents, pid: pid)
        let target = try Graft.wordPatchTarget(to, index: index, pid: pid)
        let label = "\(module.name)!\(symbol)@got"
        let loaderCode = index.modules.filter { $0.name.hasPrefix("ld-linux") || $0.name.hasPrefix("ld-musl") || $0.name.hasPrefix("ld-2.") }
            .flatMap { $0.mappings.filter(\.executable).map { $0.start..<$0.end } }
        let pointer = try PatchPlanner.checkedOriginalPointer(of: target, function: label, index: index)
        return try slots.map { found in
            if found.value == target.address { throw GraftError.usage("\(label) already holds \(target)") }
            var checks = found.checks
            if let pointer { checks.append("\(pointer.1) is a writable pointer: it gets \(hex(found.original.address)) (the original) before the slot is written") }
            return GOTPatchPlan(instance: instance, module: module.name, modulePath: module.path, buildID: try? module.elf().buildID, symbol: symbol,
                                slot: found.slot, relocation: found.relocation, currentValue: found.value, bound: found.bound,
                                original: found.original, target: target, originalPointer: pointer?.0, originalPointerSymbol: pointer?.1,
                                library: library, checks: checks, loaderCode: loaderCode)
        }
    }

    /// One GOT slot of an import as it is now: where, its relocation, its word, whether the loader
    /// bound it, and the function the module's calls reach through it.
    struct GOTSlot {
        let slot: UInt64
        let relocation: String
        let value: UInt64
        let bound: Bool
        let original: ResolvedLocation
        let checks: [String]
    }

    /// `module`'s GOT slots for `symbol` (the slot side of a plan, no target needed: `apply` checks
    /// a patch file's entry with it before loading any library).
    func gotSlots(of symbol: String, in module: LoadedModule, index: SymbolIndex, contents: JournalContents, pid: Int32) throws -> [GOTSlot] {
        let relocations = try module.elf().dynamicInfo().relocations
        let slots = relocations.filter { $0.isImportSlot(of: symbol) }
        guard !slots.isEmpty else {
            let imports = Set(relocations.filter(\.isGOTSlot).compactMap(\.symbolName)).sorted()
            let close = Suggestions.best(for: symbol, among: imports, limit: 5)
            throw GraftError.usage("\(module.name) has no GOT slot for \(symbol): it does not import it\(close.isEmpty ? "" : " (close imports: \(close.joined(separator: ", ")))")")
        }
        let label = "\(module.name)!\(symbol)@got"
        return try slots.map { relocation in
            let slot = module.loadBias &+ relocation.offset
            guard slot & 7 == 0, let mapping = index.mapping(containing: slot), mapping.path == module.path || mapping.path.isEmpty else {
                throw GraftError.usage("\(label): the slot at \(hex(slot)) is not an aligned word of \(module.name)'s mappings")
            }
            if let record = CodeSite.appliedPatch(in: contents, overlapping: slot..<(slot + 8)) {
                throw GraftError.alreadyPatched(address: slot, id: record.id, function: record.function, pid: pid)
            }
            let value = readLittleEndianUInt64(try ProcessMemory.read(pid: pid, at: slot, count: 8), at: 0)
            var checks = ["\(hex(slot)) is \(module.name)'s \(relocation.typeName) slot for \(symbol) (an aligned word in a \(mapping.permissions) mapping)"]
            // A lazy slot not yet bound points into the module's own PLT.
            let bound = !module.contains(value)
            let original: ResolvedLocation
            if bound {
                guard let found = index.symbolize(value) else {
                    throw GraftError.usage("\(label): the slot holds \(hex(value)), which is in no module graft can name; someone else changed it")
                }
                original = found
                checks.append("the slot is bound to \(found)")
            } else {
                guard let definition = Graft.definition(of: symbol, in: index, excluding: module) else {
                    throw GraftError.usage("\(label): the slot is not bound yet and no other module defines \(symbol)")
                }
                original = definition
                checks.append("the slot is not bound yet (lazy binding: it points into \(module.name)'s PLT); the loader would bind it to \(definition), which graft_original_ gets; once written, the loader never binds it")
            }
            return GOTSlot(slot: slot, relocation: relocation.typeName, value: value, bound: bound, original: original, checks: checks)
        }
    }

    /// The first global, default-version function definition of `symbol` outside `module`, in
    /// module order (the executable first, then the libraries as mapped): where the loader binds.
    static func definition(of symbol: String, in index: SymbolIndex, excluding module: LoadedModule) -> ResolvedLocation? {
        for candidate in index.modules where candidate.path != module.path && candidate.hasExecutableMapping {
            guard let elf = try? candidate.elf(),
                  let found = elf.symbols(named: symbol).first(where: { $0.isGlobal && $0.isDefaultVersion && $0.kind != .ifunc }) else { continue }
            return index.symbolize(candidate.runtimeAddress(found))
        }
        return nil
    }

    private func applyGOT(_ plan: GOTPatchPlan, contents: inout JournalContents) throws -> GOTPatchOutcome {
        var record = PatchRecord(
            id: contents.nextID, address: hex(plan.slot), function: "\(plan.module)!\(plan.symbol)@got", module: plan.modulePath,
            buildID: plan.buildID, kind: "got", target: plan.target.description, targetAddress: hex(plan.target.address), returnValue: nil,
            originalBytes: hexString(plan.originalBytes), newBytes: hexString(plan.newBytes), state: .applying, appliedAt: isoTimestamp(),
            revertedAt: nil, library: plan.library?.path, libraryBuildID: plan.library?.buildID, libraryBase: plan.library?.base)
        record.originalPointer = plan.originalPointer.map(hex)
        record.originalPointerSymbol = plan.originalPointerSymbol
        record.originalEntry = hex(plan.original.address)
        let (applied, window) = try applyWordPatch(record, instance: plan.instance, contents: &contents, slot: plan.slot,
                                                   old: plan.originalBytes, new: plan.newBytes,
                                                   pointer: plan.originalPointer, pointerValue: plan.original.address) { tracee in
            guard !plan.bound else { return }
            // A thread inside the dynamic loader may be binding this very slot: its write would
            // land after graft's.
            for tid in tracee.threadIDs {
                let pc = try tracee.programCounter(of: tid)
                if plan.loaderCode.contains(where: { $0.contains(pc) }) { throw GraftError.threadInsidePatch(tid: tid, pc: pc) }
            }
        }
        record = applied
        return GOTPatchOutcome(plan: plan, record: record, dryRun: false, stopWindowNanoseconds: window)
    }
}

extension Graft {
    /// A patch of one aligned word (a GOT or vtable slot): the intent recorded, then with every thread
    /// stopped (graft writes with ptrace; the write itself is one aligned 8-byte store, which a
    /// reader sees whole) `check`, the replacement's `graft_original_` pointer set to
    /// `pointerValue`, the word compared and written; then recorded as applied. Returns the record
    /// and the stop window.
    func applyWordPatch(_ intent: PatchRecord, instance: ProcessInstance, contents: inout JournalContents, slot: UInt64,
                        old: [UInt8], new: [UInt8], pointer: UInt64?, pointerValue: UInt64,
                        check: (Tracee) throws -> Void = { _ in }) throws -> (PatchRecord, UInt64) {
        var record = intent
        contents.nextID += 1
        contents.patches.append(record)
        try journal.save(contents, for: instance)
        let window: UInt64
        do {
            (_, _, window) = try withStoppedProcess(instance.pid) { tracee -> (Int, Int) in
                try check(tracee)
                if let pointer { try tracee.writeWord(pointerValue, at: pointer, via: try tracee.anyThread()) }
                try StoppedCode.replace(at: slot, old: old, new: new, tracee: tracee)
                return (0, 0)
            }
        } catch {
            dropIntent(&contents, instance: instance)
            throw error
        }
        record.state = .applied
        contents.patches[contents.patches.count - 1] = record
        try journal.save(contents, for: instance)
        return (record, window)
    }

    /// Takes back the intent record of a patch that was not applied (the journal saved; a failure
    /// to save leaves the record `applying`, which `list` and `unpatch` judge by memory).
    func dropIntent(_ contents: inout JournalContents, instance: ProcessInstance) {
        contents.patches.removeLast()
        contents.nextID -= 1
        try? journal.save(contents, for: instance)
    }

    /// Under the journal lock: `--library` loaded first (unless graft did already; a dry run loads
    /// nothing) and `to` read as its function, then `body` with the target text and the library's
    /// record; the loader's leftover pages freed afterwards.
    func withLibraryTarget<T>(pid: Int32, to: String, library: String?, dryRun: Bool,
                              _ body: (ProcessInstance, inout JournalContents, String, LibraryRecord?) throws -> T) throws -> T {
        try ProcFS.preflightTarget(pid)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            var target = to
            var libraryRecord: LibraryRecord?
            var cleanup: LoaderCleanup?
            defer { runCleanup(cleanup, pid: pid) }
            if let library {
                let loaded = try libraryForPatch(library, instance: instance, contents: &contents, dryRun: dryRun)
                cleanup = loaded.cleanup
                libraryRecord = loaded.record
                target = Graft.name(to, in: loaded.record)
            }
            return try body(instance, &contents, target, libraryRecord)
        }
    }
}

extension Graft {
    /// The function a GOT or vtable slot is pointed at (`--to`): a LOCATION in executable code, not
    /// an IFUNC's resolver (the slot would call the resolver instead of the function it picks).
    static func wordPatchTarget(_ to: String, index: SymbolIndex, pid: Int32) throws -> ResolvedLocation {
        let target = try index.resolve(try Location.parse(to))
        let resolver = CodeSiteResolver(index: index, disassembler: try Disassembler(.x86_64),
                                        readMemory: { try ProcessMemory.read(pid: pid, at: $0, count: $1) })
        try resolver.requireExecutable(target.address, asTarget: true)
        if target.symbol?.kind == .ifunc, let module = target.module, let name = target.symbol?.name {
            throw GraftError.ifuncSymbol(function: "\(module.name)!\(name)", use: "jumping to", pid: pid)
        }
        return target
    }
}
