import GraftCore
import GraftELF
import GraftPtrace
import Glibc

/// Patches a forked child inherited: fork copies the parent's memory, graft's bytes included, but
/// not its journal. A process's journal, when loaded, adopts the patches of its ancestors'
/// journals whose bytes it holds (same address, same module, memory = graft's new bytes): they get
/// a record of their own here (`inheritedFrom`/`inheritedPatch` say whose), so `list` shows them,
/// `unpatch` reverts them in this process, and `patch`/`hook` recognise graft's own bytes. An
/// ancestor's reverted patch counts too: a worker forked before the master's revert still has it.
extension Journal {
    /// Adds a record for each ancestor patch whose bytes `instance` holds and no record of its own
    /// covers. Ancestors: the parent chain up to pid 1, each with a journal graft can trust in
    /// this user's directories (others are skipped). Nothing is written to disk here: commands that
    /// save the journal keep the records (and their ids).
    func adoptInherited(_ contents: inout JournalContents, instance: ProcessInstance) {
        var ancestor = ProcessSet.parent(of: instance.pid)
        var seen: Set<Int32> = [instance.pid]
        var maps: [Mapping]?
        while let pid = ancestor, pid > 1, seen.insert(pid).inserted {
            defer { ancestor = ProcessSet.parent(of: pid) }
            guard let start = ProcFS.startTime(pid) else { continue }
            let parent = ProcessInstance(pid: pid, startTime: start)
            let file = path(for: parent)
            guard access(file, F_OK) == 0, Journal.directoryProblem(directory(for: parent)) == nil,
                  let journal = try? Journal.read(file) else { continue }
            for record in journal.patches where record.kind == "jump" || record.kind == "return" {
                if contents.patches.contains(where: { $0.state != .reverted && $0.range.overlaps(record.range) }) { continue }
                guard let memory = try? ProcessMemory.read(pid: instance.pid, at: record.addressValue, count: record.new.count),
                      memory == record.new else { continue }
                if maps == nil { maps = (try? ProcMaps.read(pid: instance.pid)) ?? [] }
                guard let mapping = maps?.first(where: { $0.contains(record.addressValue) }), mapping.path == record.module else { continue }
                var adopted = record
                adopted.id = contents.nextID
                adopted.state = .applied
                adopted.revertedAt = nil
                // The child's copy of the trampoline page is mapped whatever became of the parent's.
                adopted.trampolineState = record.trampolinePage == nil ? nil : "mapped"
                // The first ancestor that had it (a worker's worker still names the master).
                adopted.inheritedFrom = record.inheritedFrom ?? pid
                adopted.inheritedFromStartTime = record.inheritedFrom == nil ? start : record.inheritedFromStartTime
                adopted.inheritedPatch = record.inheritedFrom == nil ? record.id : record.inheritedPatch
                contents.nextID += 1
                contents.patches.append(adopted)
            }
        }
    }
}
