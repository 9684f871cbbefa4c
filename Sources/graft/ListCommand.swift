import ArgumentParser
import GraftCore
import GraftKit

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show the patches applied to a process and the libraries graft loaded, each checked against its memory now.",
        discussion: """
        States: applied, reverted, not-present (someone restored the bytes), changed (someone else wrote there); libraries: loaded, unloaded, gone. \
        As root, the patches other users recorded for the process are shown too (read only). \
        Examples: graft list -p 4242   |   graft list -p 8153,8293   |   graft list -n nginx   |   graft list --prune
        """)

    @OptionGroup var process: ProcessOptions

    @Flag(name: .long, help: "Remove the journals and locks of processes that no longer exist, and say which.")
    var prune = false

    func validate() throws {
        try process.requireTargets(optional: prune, command: "list")
    }

    func run() throws {
        if prune {
            let removed = process.graft.journal.prune()
            for path in removed {
                if process.json { Output.json(.object([("event", "pruned"), ("path", .string(path))])) } else { Output.line("removed \(path)") }
            }
            if !process.json && removed.isEmpty { Output.line("nothing to prune in \(process.graft.journal.directory)") }
            if process.pidArguments.isEmpty && process.names.isEmpty { return }
        }
        let pids = try process.targets()
        for (index, pid) in pids.enumerated() {
            if !process.json && pids.count > 1 { Output.line("\(index == 0 ? "" : "\n")process \(pid) (\(ProcFSName.of(pid))):") }
            try list(pid)
        }
    }

    func list(_ pid: Int32) throws {
        let statuses = try process.graft.list(pid: pid)
        let libraries = try process.graft.libraries(pid: pid)
        let foreign = try process.graft.foreignPatches(pid: pid)
        if process.json {
            for status in statuses { Output.json(status.json(pid: pid)) }
            for library in libraries { Output.json(library.json(pid: pid)) }
            for (journal, statuses) in foreign {
                if let problem = journal.problem {
                    Output.json(.object([("event", "journal-refused"), ("pid", .int(Int64(pid))), ("journal", .string(journal.path)),
                                         ("uid", .int(Int64(journal.uid))), ("reason", .string(problem))]))
                }
                for status in statuses {
                    guard case .object(let fields) = status.json(pid: pid) else { continue }
                    Output.json(.object(fields + [("journal", .string(journal.path)), ("recorded_by_uid", .int(Int64(journal.uid)))]))
                }
            }
            return
        }
        if !libraries.isEmpty {
            let rows = libraries.map { status -> [String] in
                let record = status.record
                let users = status.usedBy.isEmpty ? "-" : status.usedBy.map { "patch \($0)" }.joined(separator: ", ")
                return [record.path, status.state, "\(record.base)-\(record.end)", record.loader, users]
            }
            for line in Output.table([["LIBRARY", "STATE", "ADDRESS", "LOADER", "USED BY"]] + rows) { Output.line(line) }
            if !statuses.isEmpty { Output.line("") }
        }
        if statuses.isEmpty && libraries.isEmpty && foreign.isEmpty { Output.line("no patches recorded for process \(pid)") }
        if !statuses.isEmpty { printTable(statuses) }
        for (journal, statuses) in foreign {
            Output.line("\npatches recorded by uid \(journal.uid) (\(journal.path)):")
            if let problem = journal.problem { Output.line("  not shown: \(problem)") } else { printTable(statuses) }
        }
    }

    func printTable(_ statuses: [PatchStatus]) {
        let rows = statuses.map { status -> [String] in
            let record = status.record
            var what: String
            switch record.kind {
            case "jump": what = "jump to \(record.target ?? "?")"
            case "got": what = "GOT slot to \(record.target ?? "?")"
            case "vtable": what = "vtable slot to \(record.target ?? "?")"
            default: what = "return \(record.returnValue ?? 0)"
            }
            if let trampoline = record.trampoline {
                what += " (trampoline \(trampoline)\(record.trampolineState.map { $0 == "mapped" ? "" : ", \($0)" } ?? ""))"
            }
            if let parent = record.inheritedFrom {
                what += ", inherited from process \(parent)\(record.inheritedPatch.map { " (patch \($0))" } ?? "")"
            }
            return [String(record.id), status.state.rawValue, record.address, record.function, what, record.appliedAt]
        }
        for line in Output.table([["ID", "STATE", "ADDRESS", "FUNCTION", "PATCH", "APPLIED"]] + rows) { Output.line(line) }
    }
}

/// A process's comm for headings (`process 8153 (nginx):`).
enum ProcFSName {
    static func of(_ pid: Int32) -> String {
        (FileIO.readText(path: "/proc/\(pid)/comm") ?? "?").split(separator: "\n").first.map(String.init) ?? "?"
    }
}
