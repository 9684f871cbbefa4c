import ArgumentParser
import GraftCore
import GraftKit

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show the patches applied to a process and the libraries graft loaded, each checked against its memory now.",
        discussion: "States: applied, reverted, not-present (someone restored the bytes), changed (someone else wrote there); libraries: loaded, unloaded, gone. Example: graft list -p 4242")

    @OptionGroup var process: ProcessOptions

    func run() throws {
        let statuses = try process.graft.list(pid: process.pid)
        let libraries = try process.graft.libraries(pid: process.pid)
        if process.json {
            for status in statuses { Output.json(status.json(pid: process.pid)) }
            for library in libraries { Output.json(library.json(pid: process.pid)) }
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
        if statuses.isEmpty {
            if libraries.isEmpty { Output.line("no patches recorded for process \(process.pid)") }
            return
        }
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
            return [String(record.id), status.state.rawValue, record.address, record.function, what, record.appliedAt]
        }
        for line in Output.table([["ID", "STATE", "ADDRESS", "FUNCTION", "PATCH", "APPLIED"]] + rows) { Output.line(line) }
    }
}
