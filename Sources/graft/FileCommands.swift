import ArgumentParser
import GraftCore
import GraftKit

// `graft symbols|patch|unpatch --file FILE …`: the same commands on a program file instead of a
// process. `GraftCLI.run` sends a command line naming --file here (`FileMode`), so the live
// commands' options stay as they are.

/// Which file command serves `graft WORD … --file …`.
enum FileMode {
    static func command(for arguments: [String]) -> (any ParsableCommand.Type)? {
        guard let first = arguments.first, arguments.dropFirst().contains(where: { $0 == "--file" || $0.hasPrefix("--file=") }) else { return nil }
        switch first {
        case "symbols": return FileSymbolsCommand.self
        case "patch": return FilePatchCommand.self
        case "unpatch": return FileUnpatchCommand.self
        default: return nil
        }
    }
}

struct FileSymbolsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graft symbols",
        abstract: "List the functions of a program file: address (link time), size, instruction set, name.",
        discussion: "Examples: graft symbols --file ./prog; graft symbols --file ./prog 'price*' --json")

    @Option(name: .customLong("file"), help: ArgumentHelp("The ELF file (x86_64, i386, ARM, AArch64).", valueName: "FILE"))
    var file: String

    @Argument(help: "A glob on the function name (fnmatch: *, ?, [...]). All functions when omitted.")
    var pattern: String?

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    @Flag(name: .long, help: "Print linkage (mangled) names of C++ and Rust functions instead of demangled ones.")
    var mangled = false

    func run() throws {
        SymbolNames.mangled = mangled
        let (_, found) = try FilePatcher.symbols(path: file, matching: pattern)
        if found.isEmpty, let pattern { throw GraftError.symbolNotFound(name: pattern, module: file, suggestions: []) }
        if json {
            for function in found { Output.json(function.json(path: file)) }
            return
        }
        let rows = found.map { [hex($0.address), String($0.size), $0.instructionSet.rawValue, $0.name] }
        for line in Output.table([["ADDRESS", "SIZE", "ISA", "NAME"]] + rows) { Output.line(line) }
    }
}

struct FilePatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graft patch",
        abstract: "Patch a function of a program file: a jump to another function of the file, or a \"return N\" stub.",
        discussion: """
        The same checks as a live patch, in the function's own instruction set (x86_64, i386, ARM A32, \
        Thumb-2, AArch64); a refused patch writes nothing. The patched file is a new file renamed into \
        place with the input's permissions; FILE.graft.json beside it records the patch for `graft unpatch --file`.
        Examples:
          graft patch --file ./prog price --to cheap -o ./prog.patched
          graft patch --file ./prog price --return 0 --in-place          (keeps ./prog.orig)
          graft patch --file ./prog price --return 0 -o ./prog.patched --dry-run
        """)

    @Option(name: .customLong("file"), help: ArgumentHelp("The ELF file to patch.", valueName: "FILE"))
    var file: String

    @Argument(help: "The function to patch: NAME or 0xADDRESS (its entry, link time).")
    var location: String

    @Option(name: .customLong("to"), help: ArgumentHelp("Jump to this function of the same file.", valueName: "NAME"))
    var target: String?

    @Option(name: .customLong("return"), parsing: .unconditional,
            help: ArgumentHelp("Return this integer at once (decimal or 0x hex, may be negative).", valueName: "INT"))
    var returnArgument: Integer64?

    @Option(name: [.customShort("o"), .customLong("output")], help: ArgumentHelp("Write the patched file here.", valueName: "OUTPUT"))
    var output: String?

    @Flag(name: .customLong("in-place"), help: "Replace FILE itself (a new file renamed over it), keeping the original as FILE.orig.")
    var inPlace = false

    @Flag(name: .long, help: "Replace the file even though a process is running it (the process keeps its old code).")
    var force = false

    @Flag(name: .customLong("dry-run"), help: "Show the checks, the address and the bytes, disassembled; write nothing.")
    var dryRun = false

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    func validate() throws {
        if (target == nil) == (returnArgument == nil) { throw ValidationError("give exactly one of --to NAME or --return INT") }
        if inPlace == (output != nil) { throw ValidationError("give exactly one of -o OUTPUT or --in-place: where the patched file goes") }
    }

    func run() throws {
        let action: PatchAction = target.map { .jump(to: $0) } ?? .returnValue(returnArgument!.value)
        let outcome = try withTerminationDeferred {
            try FilePatcher.patch(path: file, location: location, action: action, output: output, inPlace: inPlace, force: force, dryRun: dryRun)
        }
        if json {
            Output.json(outcome.json)
            return
        }
        let plan = outcome.plan
        let what: String
        switch plan.action {
        case .jump: what = "jump to \(plan.target?.name ?? "?") at \(hex(plan.target?.address ?? 0)) (\(plan.encoding))"
        case .returnValue(let value): what = "return \(value)"
        }
        let place = "\(plan.function) in \(plan.path) at \(hex(plan.address)) (file offset \(hex(plan.fileOffset)), \(plan.instructionSet.rawValue))"
        if outcome.dryRun {
            Output.line("dry run: would patch \(place) with \(what) and write \(outcome.output); nothing written")
            Output.line("checks passed:")
            for check in plan.checks { Output.line("  ok  \(check)") }
        } else {
            Output.line("file patch \(outcome.id): \(place) now does: \(what)")
        }
        printBytes(original: plan.originalBytes, plan.originalInstructions, new: plan.newBytes, plan.newInstructions)
        guard !outcome.dryRun else { return }
        Output.line("wrote \(outcome.output) (mode 0\(String(outcome.mode, radix: 8))); record: \(outcome.recordPath)")
        if let backup = outcome.backup {
            Output.line(outcome.backupCreated ? "the original is kept as \(backup)" : "\(backup) already holds the original; kept as it is")
        }
        Output.line("undo with: graft unpatch --file \(outcome.output) \(outcome.id)   (or --all)")
    }
}

struct FileUnpatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graft unpatch",
        abstract: "Revert file patches byte for byte, from the record beside the file (FILE.graft.json), or from FILE.orig.",
        discussion: "Examples: graft unpatch --file ./prog.patched --all   |   graft unpatch --file ./prog.patched 2")

    @Option(name: .customLong("file"), help: ArgumentHelp("The patched file.", valueName: "FILE"))
    var file: String

    @Argument(help: ArgumentHelp("File patch ids (see the record, or the patch's output).", valueName: "ids"))
    var ids: [Int] = []

    @Flag(name: .long, help: "Revert every recorded patch (without a record: restore FILE.orig).")
    var all = false

    @Flag(name: .long, help: "Replace the file even though a process is running it.")
    var force = false

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    func validate() throws {
        if ids.isEmpty == !all { throw ValidationError("give patch ids or --all, not both and not neither") }
        if let bad = ids.first(where: { $0 <= 0 }) { throw ValidationError("'\(bad)' is not a patch id (ids are positive integers)") }
    }

    func run() throws {
        let outcome = try withTerminationDeferred { try FilePatcher.unpatch(path: file, ids: all ? nil : ids, force: force) }
        if json {
            for line in outcome.json { Output.json(line) }
            return
        }
        if let from = outcome.restoredFrom {
            Output.line("restored \(outcome.path) from \(from) (no record of single patches was there)")
            return
        }
        for entry in outcome.reverted {
            Output.line("file patch \(entry.id): reverted \(entry.function) at \(entry.address) (file offset \(entry.fileOffset); original bytes \(hexBytes(entry.original)) restored)")
        }
        if outcome.remaining > 0 {
            Output.line("\(outcome.remaining) patch\(outcome.remaining == 1 ? "" : "es") still recorded in \(FilePatchRecord.sidePath(for: outcome.path))")
        } else if outcome.identicalToSource == true {
            Output.line("\(outcome.path) is again identical to its source, byte for byte; its record is removed")
        } else {
            Output.line("every recorded patch is reverted; the record \(FilePatchRecord.sidePath(for: outcome.path)) is removed")
        }
    }
}
