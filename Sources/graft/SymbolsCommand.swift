import ArgumentParser
import GraftCore
import GraftKit

struct SymbolsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "symbols",
        abstract: "List the functions mapped in a process: address, size, module, name.",
        discussion: "Examples: graft symbols -p 4242 'value_*'; graft symbols -p 4242 'libc:getpid*'; graft symbols -n nginx 'ngx_http_*'; graft symbols --file ./prog (a program file's functions)")

    @OptionGroup var process: ProcessOptions

    @Argument(help: "A glob on the function name (fnmatch: *, ?, [...]), optionally MODULE:GLOB to look in one module (as in LOCATION). All functions when omitted.")
    var pattern: String?

    func validate() throws {
        try process.requireTargets(command: "symbols")
    }

    func run() throws {
        let pids = try process.targets()
        for (index, pid) in pids.enumerated() {
            if !process.json && pids.count > 1 { Output.line("\(index == 0 ? "" : "\n")process \(pid) (\(ProcFSName.of(pid))):") }
            try list(pid, many: pids.count > 1)
        }
    }

    func list(_ pid: Int32, many: Bool) throws {
        let found = try process.graft.symbols(pid: pid, matching: pattern)
        // No match: the one error line, and no table header before it.
        if found.isEmpty, let pattern {
            throw GraftError.symbolNotFound(name: pattern, module: nil, suggestions: [])
        }
        if process.json {
            for location in found {
                guard many, case .object(let fields) = location.symbolJSON() else { Output.json(location.symbolJSON()); continue }
                Output.json(.object(fields + [("pid", .int(Int64(pid)))]))
            }
            return
        }
        let rows = found.map { [hex($0.address), String($0.symbol?.size ?? 0), $0.module?.name ?? "?", ($0.symbol?.displayName ?? "?") + ($0.symbol?.kind == .ifunc ? " (IFUNC)" : "")] }
        for line in Output.table([["ADDRESS", "SIZE", "MODULE", "NAME"]] + rows) { Output.line(line) }
    }
}
