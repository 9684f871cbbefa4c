import ArgumentParser
import GraftCore
import GraftKit

struct UnpatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpatch",
        abstract: "Revert patches exactly: the original bytes go back only where memory still holds graft's.",
        discussion: """
        Examples: graft unpatch -p 4242 1 3   |   graft unpatch -p 4242 --all   |   graft unpatch -p 4242 --forget 2   |   graft unpatch -p 8153 --all --children   |   graft unpatch -n nginx --all
        --children also reverts, in every descendant of the process (forked workers), the patches they inherited from it.
        A patched program file: graft unpatch --file ./prog.patched --all (see graft unpatch --file FILE --help).
        A patch's trampoline is freed unless a thread still uses it (then a later unpatch frees it). \
        --all then unloads the libraries graft loaded (graft inject, --library) that nothing uses any more.
        """)

    @OptionGroup var process: ProcessOptions

    /// Read as text so `-1` reaches `validate()` (swift-argument-parser dropped it, and the error
    /// said only "give patch ids or --all"); unknown options land here too and are named there.
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("Patch ids (see `graft list`).", valueName: "ids"))
    var idArguments: [String] = []
    var ids: [Int] { idArguments.compactMap { Int($0) } }

    @Flag(name: .long, help: "Revert every applied patch, then unload the libraries graft loaded.")
    var all = false

    @Flag(name: .long, help: "Also revert the patches the process's descendants (forked workers) inherited from it: those of the ids, or all with --all.")
    var children = false

    @Flag(name: .long, help: "Drop the ids from the journal without touching memory (a patch someone else changed, or one undone by hand); refused for a patch still applied.")
    var forget = false

    func validate() throws {
        try process.requireTargets(command: "unpatch")
        for argument in idArguments {
            if argument.hasPrefix("-"), Int(argument) == nil { throw ValidationError("Unknown option '\(argument)'") }
            guard let id = Int(argument), id > 0 else {
                throw ValidationError("'\(argument)' is not a patch id (ids are positive integers, see `graft list`)")
            }
        }
        if ids.isEmpty == !all {
            throw ValidationError("give patch ids or --all, not both and not neither")
        }
        if forget && all { throw ValidationError("--forget takes patch ids, not --all") }
        if forget && children { throw ValidationError("--forget works on one process's journal, not with --children") }
    }

    func run() throws {
        let targets = try process.targets()
        // --children: each target's descendants, after it (a fork after its revert inherits nothing),
        // where only the patches inherited from it (or from a descendant in between) are reverted.
        var pids = targets
        var origins: [Int32: Set<Int32>] = [:]
        if children {
            var seen = Set(targets)
            for target in targets {
                let descendants = ProcessSet.descendants(of: target)
                for child in descendants where !targets.contains(child) {
                    origins[child, default: []].formUnion([target] + descendants)
                    if seen.insert(child).inserted { pids.append(child) }
                }
            }
        }
        var failures: [String] = []
        for (index, pid) in pids.enumerated() {
            if !process.json && pids.count > 1 { Output.line("\(index == 0 ? "" : "\n")process \(pid) (\(ProcFSName.of(pid))):") }
            do {
                var selection: [Int]? = all ? nil : ids
                if let from = origins[pid] {
                    // Only what it inherited from the targets: by their patch ids, or all of it.
                    let records = try process.graft.list(pid: pid).map(\.record).filter { record in
                        guard let parent = record.inheritedFrom, from.contains(parent), record.state != .reverted else { return false }
                        return all || (record.inheritedPatch.map { ids.contains($0) } ?? false)
                    }
                    if records.isEmpty {
                        if !process.json { Output.line("nothing inherited to revert") }
                        continue
                    }
                    selection = records.map(\.id)
                }
                try unpatch(pid, ids: selection, unload: all && origins[pid] == nil)
            } catch let error as GraftError where pids.count > 1 {
                // One process's failure does not keep the others as they were: each is reported.
                if !process.json { Output.line("process \(pid): \(error.description)") }
                if process.json { Output.json(.object([("event", "error"), ("pid", .int(Int64(pid))), ("message", .string(error.description))])) }
                failures.append(String(pid))
            }
        }
        if !failures.isEmpty {
            throw GraftError.usage("not every patch was reverted in process\(failures.count == 1 ? "" : "es") \(failures.joined(separator: ", ")) (see above)")
        }
    }

    func unpatch(_ pid: Int32, ids selection: [Int]?, unload: Bool) throws {
        let results = try withTerminationDeferred {
            forget ? try process.cancellableGraft.forget(pid: pid, ids: ids)
                : try process.cancellableGraft.unpatch(pid: pid, ids: selection)
        }
        let unloads = unload && !forget ? try withTerminationDeferred { try process.cancellableGraft.unloadLibraries(pid: pid) } : []
        let failed = results.filter { $0.outcome == .changed || $0.outcome == .failed }
        if process.json {
            for result in results { Output.json(result.json(pid: pid)) }
            for unload in unloads { Output.json(unload.json(pid: pid)) }
        } else if results.isEmpty {
            Output.line("no applied patches for process \(pid)")
        }
        if !process.json {
            for result in results {
                let record = result.record
                switch result.outcome {
                case .reverted:
                    let inherited = record.inheritedFrom.map { " (inherited from process \($0)\(record.inheritedPatch.map { ", patch \($0)" } ?? ""))" } ?? ""
                    Output.line("patch \(record.id)\(inherited): reverted \(record.function) at \(record.address) (original bytes \(hexBytes(record.original)) restored)")
                    if let note = result.trampolineNote { Output.line("  trampoline at \(record.trampoline ?? "?"): \(note)") }
                case .alreadyReverted:
                    Output.line("patch \(record.id): already reverted (\(result.message ?? ""))")
                case .forgotten:
                    Output.line("patch \(record.id): forgotten (\(result.message ?? ""))")
                case .changed, .failed:
                    // Several: a line each here, one error line below.
                    if failed.count > 1 {
                        Output.line("patch \(record.id): not reverted: \(result.message ?? result.outcome.rawValue)")
                    }
                }
            }
        }
        if !process.json {
            for unload in unloads {
                let what = "library \(unload.record.path) (\(unload.record.base))"
                switch unload.outcome {
                case .unloaded: Output.line("\(what): unloaded")
                case .gone: Output.line("\(what): \(unload.message ?? "already gone")")
                case .kept, .failed: Output.line("\(what): not unloaded: \(unload.message ?? unload.outcome.rawValue)")
                }
            }
        }
        let hint = failed.contains { $0.outcome == .changed } ? "; `graft unpatch -p \(pid) --forget ID` drops a patch someone else changed" : ""
        if failed.count == 1, !process.json {
            throw GraftError.usage("patch \(failed[0].record.id): \(failed[0].message ?? failed[0].outcome.rawValue)\(hint)")
        }
        if !failed.isEmpty {
            let ids = failed.map { String($0.record.id) }.joined(separator: " ")
            throw GraftError.usage("\(failed.count == 1 ? "patch" : "patches") \(ids) not reverted\(process.json ? " (see the JSON events)" : " (see above)")\(hint)")
        }
    }
}
