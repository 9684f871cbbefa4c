import ArgumentParser
import GraftCore
import GraftKit

struct UnpatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpatch",
        abstract: "Revert patches exactly: the original bytes go back only where memory still holds graft's.",
        discussion: "Examples: graft unpatch -p 4242 1 3   |   graft unpatch -p 4242 --all")

    @OptionGroup var process: ProcessOptions

    @Argument(help: "Patch ids (see `graft list`).")
    var ids: [Int] = []

    @Flag(name: .long, help: "Revert every applied patch.")
    var all = false

    func validate() throws {
        if ids.isEmpty == !all {
            throw ValidationError("give patch ids or --all, not both and not neither")
        }
    }

    func run() throws {
        let results = try withTerminationDeferred {
            try process.graft.unpatch(pid: process.pid, ids: all ? nil : ids)
        }
        if process.json {
            for result in results { Output.json(result.json(pid: process.pid)) }
        } else if results.isEmpty {
            Output.line("no applied patches for process \(process.pid)")
        } else {
            for result in results {
                let record = result.record
                switch result.outcome {
                case .reverted:
                    Output.line("patch \(record.id): reverted \(record.function) at \(record.address) (original bytes \(hexBytes(record.original)) restored)")
                case .alreadyReverted:
                    Output.line("patch \(record.id): already reverted (\(result.message ?? ""))")
                case .changed, .failed:
                    Output.error("patch \(record.id): \(result.message ?? result.outcome.rawValue)")
                }
            }
        }
        if results.contains(where: { $0.outcome == .changed || $0.outcome == .failed }) {
            throw CommandFailed(code: 1)
        }
    }
}
