import GraftCore
import GraftELF
import GraftPtrace

/// What `apply` (or `apply --revert`) did with one entry of a patch file in one process.
public struct ApplyResult: Sendable {
    public enum Outcome: String, Sendable {
        case applied
        /// Already there (graft's bytes, recorded): nothing written.
        case alreadyApplied = "already-applied"
        /// This process refused the entry (`message` says why: build-id, bytes, a check of patch).
        case refused
        /// Not written because another entry refused in this process (a file applies whole).
        case notApplied = "not-applied"
        /// `--revert`: the entry's patch was reverted, or was not there to revert.
        case reverted
        case notPresent = "not-present"
    }
    public let pid: Int32
    public let entry: PatchFile.Entry
    public var outcome: Outcome
    public var message: String?
    /// The journal's patch id in this process.
    public var patchID: Int?

    public init(pid: Int32, entry: PatchFile.Entry, outcome: Outcome, message: String? = nil, patchID: Int? = nil) {
        self.pid = pid; self.entry = entry; self.outcome = outcome; self.message = message; self.patchID = patchID
    }
}

extension Graft {
    // MARK: - Export

    /// The patches applied to `pid` now (memory holds graft's bytes), as a patch file; a patch
    /// graft cannot name again (an unknown kind, a GOT or vtable slot whose original function is in
    /// no module) is not exported (returned as a note, with its id).
    public func export(pid: Int32) throws -> (file: PatchFile, skipped: [String]) {
        var entries: [PatchFile.Entry] = []
        var skipped: [String] = []
        var index: SymbolIndex?
        for status in try list(pid: pid) where status.state == .applied {
            let record = status.record
            if record.kind == "got" || record.kind == "vtable" {
                if index == nil { index = try Graft.symbolIndex(pid: pid, journal: journal) }
                guard let entry = wordEntry(record, index: index!) else {
                    skipped.append("patch \(record.id) (\(record.kind) \(record.function)): what its slot held is in no module graft can name")
                    continue
                }
                // One `--got` patch covers every slot of the symbol in the module: one entry.
                if !entries.contains(entry) { entries.append(entry) }
                continue
            }
            guard record.kind == "jump" || record.kind == "return" else {
                skipped.append("patch \(record.id) (\(record.kind) \(record.function)): a kind patch files do not hold")
                continue
            }
            let module = record.module.split(separator: "/").last.map(String.init) ?? record.module
            var target = record.target
            // A library's function is named by its symbol: apply loads the library and looks it up.
            if record.library != nil, let full = target, let bang = full.lastIndex(of: "!") { target = String(full[full.index(after: bang)...]) }
            entries.append(PatchFile.Entry(location: record.function, module: module, buildID: record.buildID, kind: record.kind,
                                           returnValue: record.returnValue, target: target, library: record.library,
                                           libraryBuildID: record.libraryBuildID, original: record.original, new: record.new))
        }
        return (PatchFile(entries: entries), skipped)
    }

    // MARK: - Apply

    /// Applies a patch file to `pid`, whole: every entry is checked first — its module mapped with
    /// the file's build-id, memory holding the file's original bytes (or the entry's patch already:
    /// then nothing is written for it), graft's own checks — and if one refuses, nothing is written
    /// in this process. Idempotent: a second apply finds every entry applied.
    public func apply(_ file: PatchFile, pid: Int32, dryRun: Bool = false) throws -> [ApplyResult] {
        try ProcFS.preflightTarget(pid)
        var results = file.entries.map { ApplyResult(pid: pid, entry: $0, outcome: .notApplied) }
        var pending: [Int] = []
        for index in results.indices {
            do {
                switch try check(file.entries[index], pid: pid) {
                case .applied(let ids):
                    results[index].outcome = .alreadyApplied
                    results[index].patchID = ids.first
                    results[index].message = "already applied (patch \(ids.map(String.init).joined(separator: ", "))); nothing written"
                case .original:
                    pending.append(index)
                }
            } catch let error as GraftError {
                results[index].outcome = .refused
                results[index].message = error.description
            }
        }
        if results.contains(where: { $0.outcome == .refused }) {
            for index in pending { results[index].message = "not written: another entry of the file refused in this process" }
            return results
        }
        if dryRun {
            for index in pending { results[index].message = "would be applied (dry run: nothing written)" }
            return results
        }
        var written: [Int] = []
        var writtenIDs: [Int] = []
        for index in pending {
            let entry = file.entries[index]
            do {
                let ids = entry.isWordPatch ? try writeWord(entry, pid: pid)
                    : try patch(pid: pid, location: entry.location, action: entry.action, library: entry.library).record.map { [$0.id] } ?? []
                results[index].outcome = .applied
                results[index].patchID = ids.first
                written.append(index)
                writtenIDs += ids
            } catch let error as GraftError {
                results[index].outcome = .refused
                results[index].message = error.description
                // Whole or not at all: what this run wrote in this process goes back.
                if !writtenIDs.isEmpty { _ = try? unpatch(pid: pid, ids: writtenIDs) }
                for done in written {
                    results[done].outcome = .notApplied
                    results[done].message = "reverted again: another entry of the file refused in this process"
                }
                return results
            }
        }
        return results
    }

    /// `apply --revert`: each entry's patch, where this process has it applied (by graft, recorded
    /// or inherited), is reverted; the others are reported as not present.
    public func revert(_ file: PatchFile, pid: Int32) throws -> [ApplyResult] {
        try ProcFS.preflightTarget(pid)
        var results: [ApplyResult] = []
        for entry in file.entries {
            var result = ApplyResult(pid: pid, entry: entry, outcome: .notPresent)
            do {
                if case .applied(let ids) = try check(entry, pid: pid, reverting: true) {
                    let reverted = try unpatch(pid: pid, ids: ids)
                    if let bad = reverted.first(where: { $0.outcome == .changed || $0.outcome == .failed }) {
                        result.outcome = .refused
                        result.message = bad.message
                    } else {
                        result.outcome = .reverted
                    }
                    result.patchID = ids.first
                } else {
                    result.message = "not applied here; nothing to revert"
                }
            } catch let error as GraftError {
                result.outcome = .refused
                result.message = error.description
            }
            results.append(result)
        }
        return results
    }

    private enum EntryState { case applied([Int]), original }

    /// Where `entry` stands in `pid`: applied (graft's record of it, by id), or the original bytes
    /// there, ready for it; otherwise the refusal, by name. `reverting`: the library file the
    /// entry names is not checked (what is applied is reverted whatever the library is now).
    private func check(_ entry: PatchFile.Entry, pid: Int32, reverting: Bool = false) throws -> EntryState {
        if entry.isWordPatch { return try checkWord(entry, pid: pid, reverting: reverting).map { .applied($0) } ?? .original }
        let index = try Graft.symbolIndex(pid: pid, journal: journal)
        let resolved = try index.resolve(try Location.parse(entry.location))
        guard let module = resolved.module else { throw GraftError.usage("\(entry.location): no module at \(hex(resolved.address))") }
        if module.name != entry.module {
            throw GraftError.usage("\(entry.location) is in \(module.name) here, not \(entry.module)")
        }
        let buildID = try? module.elf().buildID
        if let wanted = entry.buildID, let buildID, wanted != buildID {
            throw GraftError.usage("\(entry.module)'s build-id is \(buildID) in process \(pid), the file's is \(wanted): another build; refused")
        }
        if let wanted = entry.buildID, buildID == nil {
            throw GraftError.usage("\(entry.module) in process \(pid) has no build-id to compare with the file's \(wanted); refused")
        }
        // A library's function: the library given must be the build the file names.
        if !reverting, let library = entry.library, let wanted = entry.libraryBuildID {
            let file = try LibraryFile.open(library, pid: pid)
            if let found = file.elf.buildID, found != wanted {
                throw GraftError.usage("\(file.path)'s build-id is \(found), the file's is \(wanted): another build of the library; refused")
            }
        }
        // The patch's address: after a kept endbr64, as patch writes it.
        var address = resolved.address
        let head = (try? ProcessMemory.read(pid: pid, at: address, count: 4)) ?? []
        if head == [0xf3, 0x0f, 0x1e, 0xfa] && Array(entry.original.prefix(4)) != head { address += 4 }
        let memory = try ProcessMemory.read(pid: pid, at: address, count: entry.new.count)
        let statuses = try list(pid: pid)
        if let status = statuses.first(where: { $0.state == .applied && $0.record.addressValue == address }) {
            let record = status.record
            let same = record.kind == entry.kind && record.original == entry.original
                && (entry.kind == "return" ? record.returnValue == entry.returnValue && record.new == entry.new
                    : (record.target == entry.target || record.target?.hasSuffix("!" + (entry.target ?? "")) == true))
            if same { return .applied([record.id]) }
            throw GraftError.usage("\(entry.location) is patched by graft already, differently (patch \(record.id): \(record.kind) \(record.target ?? record.returnValue.map(String.init) ?? "")); refused")
        }
        if memory == entry.original { return .original }
        throw GraftError.usage("\(entry.location) at \(hex(address)) holds \(hexBytes(memory)) in process \(pid), not the file's original bytes \(hexBytes(entry.original)); refused")
    }
}

extension PatchFile.Entry {
    var action: PatchAction {
        kind == "return" ? .returnValue(returnValue ?? 0) : .jump(to: target ?? "")
    }
}
