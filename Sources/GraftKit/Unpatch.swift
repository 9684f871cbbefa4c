import GraftCore
import GraftELF
import GraftPtrace
import Glibc

/// What `unpatch` did to one patch.
public struct UnpatchResult: Sendable {
    public enum Outcome: String, Sendable {
        case reverted
        /// Already reverted: nothing to do.
        case alreadyReverted = "already-reverted"
        /// Memory no longer holds graft's bytes: left untouched.
        case changed
        case failed
        /// Dropped from the journal by `forget`; memory untouched.
        case forgotten
    }
    public let record: PatchRecord
    public let outcome: Outcome
    public let message: String?
    public let steppedThreads: [Int32]
    /// How long the process was stopped for this unpatch (0 when nothing needed a write: graft then
    /// does not stop it at all). The same window for every patch reverted by one call.
    public var stopWindowNanoseconds: UInt64 = 0
    /// The patch's trampoline after this unpatch: `freed`, or `kept` with why (a thread was still
    /// using it; a later `unpatch` frees it).
    public var trampolineNote: String? = nil
}

extension Graft {
    // MARK: - Unpatch

    /// Reverts patches by id (all applied ones when `ids` is nil): original bytes are written back only
    /// where memory still holds graft's bytes.
    public func unpatch(pid: Int32, ids: [Int]?) throws -> [UnpatchResult] {
        try ProcFS.preflightTarget(pid)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            let selected: [Int]
            if let ids {
                for id in ids where !contents.patches.contains(where: { $0.id == id }) {
                    throw GraftError.patchNotFound(id: id, pid: pid)
                }
                selected = ids
            } else {
                selected = contents.patches.filter { $0.state != .reverted }.map(\.id)
            }
            guard !selected.isEmpty else {
                // Nothing to revert; trampolines kept earlier may be free now.
                if try !releaseTrampolines(pid: pid, contents: &contents).isEmpty { try journal.save(contents, for: instance) }
                return []
            }
            var results: [UnpatchResult] = []
            let now = isoTimestamp()  // outside the stop window
            // Inside the stop window only ptrace work: what happened to each patch is noted, and the
            // journal records (arrays of strings: copies, allocations) are updated after the process
            // runs again.
            enum Done { case already, changed([UInt8]), reverted([Int32]), failed(String) }
            let positions = selected.map { id in contents.patches.firstIndex(where: { $0.id == id })! }
            // The records keep their bytes as hex strings: decode them before stopping anything, and
            // read memory now (/proc/PID/mem, the process running): a patch whose bytes are not
            // graft's is reported without stopping the process at all.
            let targets = positions.map { position in
                let record = contents.patches[position]
                return (address: record.addressValue, new: record.new, original: record.original, range: record.range,
                        recorded: record.state)
            }
            var done: [Done] = []
            var toRevert: [Int] = []
            let maps = (try? ProcMaps.read(pid: pid)) ?? []
            for (index, target) in targets.enumerated() {
                let memory: [UInt8]
                do {
                    memory = try ProcessMemory.read(pid: pid, at: target.address, count: target.new.count)
                } catch let error as GraftError {
                    if case .addressNotMapped = error { done.append(.failed(error.description)); continue }
                    throw error
                }
                switch Graft.state(new: target.new, original: target.original, recorded: target.recorded, memory: memory) {
                case .applied:
                    // The journal's original bytes are written back only if they are the module's.
                    if let problem = Graft.originalBytesProblem(contents.patches[positions[index]], maps: maps, pid: pid) {
                        done.append(.failed(problem))
                        continue
                    }
                    done.append(.already); toRevert.append(index)  // decided in the stop window below
                case .reverted, .notPresent: done.append(.already)
                case .changed: done.append(.changed(memory))
                }
            }
            var window: UInt64 = 0
            if !toRevert.isEmpty {
                (_, _, window) = try withStoppedProcess(pid) { tracee -> (Int, Int) in
                    for index in toRevert {
                        let target = targets[index]
                        do {
                            let stepped = try StoppedCode.moveThreadsOut(of: target.range, tracee: tracee)
                            // Compare and write in one pass: memory may have changed since the read above.
                            if let found = try tracee.replaceText(at: target.address, expected: target.new, new: target.original) {
                                let state = Graft.state(new: target.new, original: target.original, recorded: target.recorded, memory: found)
                                done[index] = state == .changed ? .changed(found) : .already
                            } else {
                                done[index] = .reverted(stepped)
                            }
                        } catch let error as GraftError {
                            if let death = tracee.processDeath() { throw death }
                            done[index] = .failed(error.description)
                        }
                    }
                    return (0, 0)
                }
            }
            for (position, outcome) in zip(positions, done) {
                var record = contents.patches[position]
                switch outcome {
                case .already:
                    var message = "memory already holds the original bytes"
                    if record.state == .reverted {
                        message = "\(record.revertedAt.map { "since \($0)" } ?? "earlier"); memory left as it is"
                    } else {
                        record.state = .reverted
                        record.revertedAt = now
                        contents.patches[position] = record
                    }
                    results.append(UnpatchResult(record: record, outcome: .alreadyReverted, message: message, steppedThreads: []))
                case .changed(let memory):
                    results.append(UnpatchResult(record: record, outcome: .changed, message: "memory at \(record.address) holds \(hexBytes(memory)), not graft's \(hexBytes(record.new)): someone else changed it; left untouched", steppedThreads: []))
                case .reverted(let stepped):
                    record.state = .reverted
                    record.revertedAt = now
                    contents.patches[position] = record
                    results.append(UnpatchResult(record: record, outcome: .reverted, message: nil, steppedThreads: stepped,
                                                 stopWindowNanoseconds: window))
                case .failed(let message):
                    results.append(UnpatchResult(record: record, outcome: .failed, message: message, steppedThreads: []))
                }
            }
            let notes = try releaseTrampolines(pid: pid, contents: &contents)
            for index in results.indices {
                if let note = notes[results[index].record.id] {
                    results[index].trampolineNote = note
                    if let updated = contents.patches.first(where: { $0.id == results[index].record.id }) {
                        results[index] = UnpatchResult(record: updated, outcome: results[index].outcome, message: results[index].message,
                                                       steppedThreads: results[index].steppedThreads,
                                                       stopWindowNanoseconds: results[index].stopWindowNanoseconds, trampolineNote: note)
                    }
                }
            }
            try journal.save(contents, for: instance)
            return results
        }
    }

    /// Why the record's original bytes must not be written back (nil: they may): for code in a
    /// file-backed mapping, they differ from the file's bytes at that address — the same check
    /// `patch` makes before its first write, here against a journal someone may have altered (to
    /// int3s, say). GOT and vtable words are relocated data, not the file's bytes: not checked;
    /// code in anonymous memory has no file to check against.
    static func originalBytesProblem(_ record: PatchRecord, maps: [Mapping], pid: Int32) -> String? {
        guard record.kind == "jump" || record.kind == "return" else { return nil }
        let address = record.addressValue, original = record.original
        guard let mapping = maps.first(where: { $0.contains(address) }), mapping.isFileBacked,
              address + UInt64(original.count) <= mapping.end else { return nil }
        // The mapped file itself: its path when it is still the same inode, else map_files (root).
        var info = stat()
        let path = !mapping.isDeleted && stat(mapping.path, &info) == 0 && info.st_ino == mapping.inode
            ? mapping.path : "/proc/\(pid)/map_files/\(String(mapping.start, radix: 16))-\(String(mapping.end, radix: 16))"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let offset = mapping.offset + (address - mapping.start)
        var file = [UInt8](repeating: 0, count: original.count)
        let n = file.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n == original.count else { return nil }
        if file == original { return nil }
        return "the journal's original bytes \(hexBytes(original)) are not \(mapping.path)'s (\(hexBytes(file)) at file offset \(hex(offset))): the record was altered; not written back, memory keeps what it holds"
    }

    /// The trampolines of reverted patches (just now, or kept earlier because a thread used
    /// them): each `graft_original_` pointer goes back to the original function (whole again), and
    /// a page no thread's pc or stack points into is unmapped (`freed`); the others stay (`kept`).
    /// Returns a note per patch id.
    func releaseTrampolines(pid: Int32, contents: inout JournalContents) throws -> [Int: String] {
        let releasing = contents.patches.indices.filter { index in
            let record = contents.patches[index]
            return record.state == .reverted && record.trampolinePage != nil && (record.trampolineState == "mapped" || record.trampolineState == "kept")
        }
        guard !releasing.isEmpty else { return [:] }
        let records = releasing.map { contents.patches[$0] }
        func value(_ text: String?) -> UInt64? { text.flatMap(hexValue) }
        let (kept, _, _) = try withStoppedProcess(pid) { tracee -> ([String?], Int) in
            var kept: [String?] = []
            let thread = try tracee.anyThread()
            for record in records {
                if let pointer = value(record.originalPointer), let trampoline = value(record.trampoline), let entry = value(record.originalEntry),
                   (try? tracee.readWord(at: pointer, via: thread)) == trampoline {
                    try? tracee.writeWord(entry, at: pointer, via: thread)
                }
                guard let page = value(record.trampolinePage) else { kept.append(nil); continue }
                if let reason = try TrampolineSite.user(of: page..<(page + TrampolineSite.pageSize), tracee: tracee) {
                    kept.append(reason)
                } else {
                    try tracee.remoteMunmap(address: page, length: TrampolineSite.pageSize)
                    kept.append(nil)
                }
            }
            return (kept, 0)
        }
        var notes: [Int: String] = [:]
        for (index, reason) in zip(releasing, kept) {
            contents.patches[index].trampolineState = reason == nil ? "freed" : "kept"
            notes[contents.patches[index].id] = reason.map { "kept: \($0); a later `graft unpatch` frees it" } ?? "freed"
        }
        return notes
    }
}
