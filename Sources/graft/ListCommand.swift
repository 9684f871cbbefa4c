import ArgumentParser
import GraftCore
import GraftKit

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show the patches applied to a process, each checked against its memory now.",
        discussion: "States: applied, reverted, not-present (someone restored the bytes), changed (someone else wrote there). Example: graft list -p 4242")

    @OptionGroup var process: ProcessOptions

    func run() throws {
        let statuses = try process.graft.list(pid: process.pid)
        if process.json {
            for status in statuses { Output.json(status.json(pid: process.pid)) }
            return
        }
        if statuses.isEmpty {
            Output.line("no patches recorded for process \(process.pid)")
            return
        }
        let rows = statuses.map { status -> [String] in
            let record = status.record
            let what = record.kind == "jump" ? "jump to \(record.target ?? "?")" : "return \(record.returnValue ?? 0)"
            return [String(record.id), status.state.rawValue, record.address, record.function, what, record.appliedAt]
        }
        for line in Output.table([["ID", "STATE", "ADDRESS", "FUNCTION", "PATCH", "APPLIED"]] + rows) { Output.line(line) }
    }
}
