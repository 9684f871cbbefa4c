import GraftCore
import GraftELF
import GraftPtrace

/// GOT and vtable entries of a patch file (`kind: got`, `kind: vtable`): one word each, whose value
/// is an address that differs per process. Exported as what apply needs to redo the patch — the
/// slot's module and build-id, the symbol or class and slot, the target (and library) — and the
/// function the slot's original word led to, which apply compares in each process.
extension Graft {
    /// The entry for an applied GOT or vtable record of `pid` (nil: not one graft can name again).
    func wordEntry(_ record: PatchRecord, index: SymbolIndex) -> PatchFile.Entry? {
        let module = record.module.split(separator: "/").last.map(String.init) ?? record.module
        guard let entryValue = record.originalEntry.flatMap(hexValue), let original = index.symbolize(entryValue) else { return nil }
        var target = record.target
        if record.library != nil, let full = target, let bang = full.lastIndex(of: "!") { target = String(full[full.index(after: bang)...]) }
        var entry = PatchFile.Entry(location: record.function, module: module, buildID: record.buildID, kind: record.kind, target: target,
                                    library: record.library, libraryBuildID: record.libraryBuildID, original: [], new: [])
        entry.originalFunction = original.description
        if record.kind == "got" {
            // `MODULE!SYMBOL@got`
            guard record.function.hasPrefix(module + "!"), record.function.hasSuffix("@got") else { return nil }
            entry.symbol = String(record.function.dropFirst(module.count + 1).dropLast(4))
        } else {
            // `CLASS::vtable[N] (METHOD)`
            guard let mark = record.function.firstRange(of: "::vtable["), let close = record.function[mark.upperBound...].firstIndex(of: "]"),
                  let slot = Int(record.function[mark.upperBound..<close]) else { return nil }
            entry.className = String(record.function[..<mark.lowerBound])
            entry.slot = slot
            let rest = record.function[record.function.index(after: close)...]
            if rest.hasPrefix(" ("), rest.hasSuffix(")") { entry.method = String(rest.dropFirst(2).dropLast()) }
        }
        return entry
    }

    /// The journal's applied records of `entry` in this process (a GOT entry may cover several slots).
    func wordRecords(_ entry: PatchFile.Entry, statuses: [PatchStatus]) -> [PatchRecord] {
        statuses.filter { $0.state == .applied && $0.record.kind == entry.kind }.map(\.record).filter { record in
            entry.kind == "got" ? record.function == "\(entry.module)!\(entry.symbol ?? "")@got"
                : record.function.hasPrefix("\(entry.className ?? "")::vtable[\(entry.slot ?? -1)]")
        }
    }

    /// Where a GOT or vtable entry stands in `pid`: graft's records of it (the same target), or the
    /// slot leading to the file's original function, ready for it; otherwise the refusal, by name.
    func checkWord(_ entry: PatchFile.Entry, pid: Int32, reverting: Bool) throws -> [Int]? {
        let index = try Graft.symbolIndex(pid: pid, journal: journal)
        let contents = try journal.load(try ProcessInstance.current(pid))
        let what = entry.kind == "got" ? "\(entry.module)'s GOT slot for \(entry.symbol ?? "?")"
            : "\(entry.className ?? "?")'s vtable slot \(entry.slot ?? -1)"
        // The slot's module: mapped, the file's build.
        let module: LoadedModule
        let slots: [(value: UInt64, original: ResolvedLocation)]
        var method: String?
        if entry.kind == "got" {
            module = try index.module(named: entry.module)
            try checkBuildID(entry, of: module, pid: pid)
            let records = wordRecords(entry, statuses: try list(pid: pid))
            if !records.isEmpty { return try sameTarget(entry, records: records) }
            if reverting { return nil }
            slots = try gotSlots(of: entry.symbol ?? "", in: module, index: index, contents: contents, pid: pid).map { ($0.value, $0.original) }
        } else {
            let found = try vtableSlot(of: entry.className ?? "", method: nil, slotIndex: entry.slot, index: index, pid: pid)
            module = found.module
            if module.name != entry.module {
                throw GraftError.usage("\(entry.className ?? "?")'s vtable is in \(module.name) in process \(pid), not \(entry.module)")
            }
            try checkBuildID(entry, of: module, pid: pid)
            let records = wordRecords(entry, statuses: try list(pid: pid))
            if !records.isEmpty { return try sameTarget(entry, records: records) }
            if reverting { return nil }
            if let record = CodeSite.appliedPatch(in: contents, overlapping: found.slot..<(found.slot + 8)) {
                throw GraftError.alreadyPatched(address: found.slot, id: record.id, function: record.function, pid: pid)
            }
            guard let original = index.symbolize(found.value) else {
                throw GraftError.usage("\(what) holds \(hex(found.value)) in process \(pid), in no module graft can name, not the file's original \(entry.originalFunction ?? "?"); refused")
            }
            slots = [(found.value, original)]
            method = found.names[found.chosen]
        }
        for slot in slots where slot.original.description != entry.originalFunction {
            throw GraftError.usage("\(what) leads to \(slot.original) (\(hex(slot.value))) in process \(pid), not the file's original \(entry.originalFunction ?? "?"); refused")
        }
        if let method, let wanted = entry.method, method != wanted {
            throw GraftError.usage("\(what) holds \(method) in process \(pid), not the file's \(wanted); refused")
        }
        if let library = entry.library, let wanted = entry.libraryBuildID {
            let file = try LibraryFile.open(library, pid: pid)
            if let found = file.elf.buildID, found != wanted {
                throw GraftError.usage("\(file.path)'s build-id is \(found), the file's is \(wanted): another build of the library; refused")
            }
        }
        if entry.library == nil { _ = try Graft.wordPatchTarget(entry.target ?? "", index: index, pid: pid) }
        return nil
    }

    private func checkBuildID(_ entry: PatchFile.Entry, of module: LoadedModule, pid: Int32) throws {
        guard let wanted = entry.buildID else { return }
        guard let buildID = try? module.elf().buildID else {
            throw GraftError.usage("\(entry.module) in process \(pid) has no build-id to compare with the file's \(wanted); refused")
        }
        if wanted != buildID {
            throw GraftError.usage("\(entry.module)'s build-id is \(buildID) in process \(pid), the file's is \(wanted): another build; refused")
        }
    }

    /// graft's records of the entry's slot: the entry applied already (their ids), or refused when
    /// they point elsewhere.
    private func sameTarget(_ entry: PatchFile.Entry, records: [PatchRecord]) throws -> [Int] {
        for record in records where !(record.target == entry.target || record.target?.hasSuffix("!" + (entry.target ?? "")) == true) {
            throw GraftError.usage("\(entry.location) is patched by graft already, differently (patch \(record.id): to \(record.target ?? "?")); refused")
        }
        return records.map(\.id)
    }

    /// Writes a checked GOT or vtable entry with `patchGOT`/`patchVTable`; the journal ids.
    func writeWord(_ entry: PatchFile.Entry, pid: Int32) throws -> [Int] {
        if entry.kind == "got" {
            return try patchGOT(pid: pid, slot: "\(entry.module):\(entry.symbol ?? "")", to: entry.target ?? "", library: entry.library)
                .compactMap { $0.record?.id }
        }
        let outcome = try patchVTable(pid: pid, className: entry.className ?? "", method: nil, index: entry.slot, to: entry.target ?? "",
                                      library: entry.library)
        return outcome.record.map { [$0.id] } ?? []
    }
}
