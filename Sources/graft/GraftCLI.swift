import ArgumentParser
import GraftCore
import GraftKit
import GraftELF
import GraftPtrace
import Glibc

/// Entry point: runs the command and turns every error into one line `graft: error: …` on stderr.
@main
struct GraftCLI {
    static func main() {
        let code = run(Array(CommandLine.arguments.dropFirst()))
        exit(code)
    }

    static func run(_ arguments: [String]) -> Int32 {
        // `graft hook … -- COMMAND ARGS`: everything after the first `--` is the command, verbatim
        // (swift-argument-parser cannot put a passthrough list after a list of LOCATIONs).
        var arguments = arguments
        Passthrough.command = []
        if let first = arguments.first, Passthrough.subcommands.contains(first), let split = arguments.firstIndex(of: "--") {
            Passthrough.command = Array(arguments[(split + 1)...])
            Passthrough.hasTerminator = true
            arguments = Array(arguments[..<split])
        } else {
            Passthrough.hasTerminator = false
        }
        // `graft symbols|patch|unpatch --file FILE …` work on a program file (FileCommands.swift).
        if let fileCommand = FileMode.command(for: arguments) {
            return run(fileCommand, Array(arguments.dropFirst()))
        }
        return run(GraftCommand.self, arguments)
    }

    static func run(_ root: any ParsableCommand.Type, _ arguments: [String]) -> Int32 {
        do {
            var command = try root.parseAsRoot(arguments)
            try command.run()
            return 0
        } catch let error as GraftError {
            Output.error(error.description)
            return 1
        } catch let exit as CommandFailed {
            return exit.code
        } catch {
            let code = root.exitCode(for: error)
            if code == .success {
                print(root.fullMessage(for: error))
                return 0
            }
            let message = root.message(for: error)
            let firstLine = message.split(separator: "\n").first.map(String.init) ?? message
            Output.error(firstLine.replacingOccurrences(of: "Error: ", with: ""))
            return code.rawValue == 0 ? 1 : code.rawValue
        }
    }
}

/// The words after `--` for commands that start a program.
enum Passthrough {
    static let subcommands: Set<String> = ["hook", "trace", "watch"]
    nonisolated(unsafe) static var command: [String] = []
    nonisolated(unsafe) static var hasTerminator = false
}

/// A command that already printed its own report and only needs a non-zero exit status.
struct CommandFailed: Error {
    let code: Int32
}

struct GraftCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graft",
        abstract: "Change and watch a running process without restarting it: jump patches with checks and exact undo, persistent hooks, single-step traces.",
        discussion: """
        LOCATION is NAME, MODULE:NAME (MODULE: the mapped file's basename or a prefix of it, e.g. libc), \
        LOCATION+OFFSET, or 0xADDRESS. Every failure prints one line `graft: error: …` and exits non-zero.
        """,
        version: "0.1.0",
        subcommands: [SymbolsCommand.self, InjectCommand.self, PatchCommand.self, ListCommand.self, UnpatchCommand.self, ExportCommand.self, ApplyCommand.self, HookCommand.self, WatchCommand.self, TraceCommand.self, DemoCommand.self]
    )
}

/// Options every command that targets a process shares: `-p` (several: `-p 8153,8293`, or `-p`
/// repeated) and `-n NAME` (every process of a program). Each command's `validate()` says how many
/// it takes (`requireTargets`).
struct ProcessOptions: ParsableArguments {
    @Option(name: [.customShort("p"), .customLong("pid")], parsing: .unconditionalSingleValue,
            help: ArgumentHelp("The process to work on (several: -p 8153,8293, or -p repeated).", valueName: "pid"))
    var pidArguments: [ProcessIDList] = []

    @Option(name: [.customShort("n"), .customLong("name")],
            help: ArgumentHelp("Every process whose executable (or comm) is NAME.", valueName: "name"))
    var names: [String] = []

    /// The pids given with -p, in order, each once (positive numbers once `validate()` has run).
    var explicitPIDs: [Int32] {
        var seen: Set<Int32> = []
        return pidArguments.flatMap(\.items).compactMap(\.value).filter { seen.insert($0).inserted }
    }
    /// The one process of a single-process command (`requireTargets(single: true)` made sure).
    var pid: Int32 { explicitPIDs.first ?? 0 }
    /// More than one process may be meant (a list, a repeated -p, or -n).
    var isMany: Bool { !names.isEmpty || explicitPIDs.count > 1 }

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Journal directory (default: $GRAFT_STATE_DIR, else /run/graft/UID, $XDG_RUNTIME_DIR/graft, ~/.local/state/graft, /tmp/graft-UID).", visibility: .hidden))
    var stateDirectory: String?

    @Flag(name: .long, help: "Print linkage (mangled) names of C++ and Rust functions instead of demangled ones.")
    var mangled = false

    var graft: Graft { Graft(journal: Journal(directory: stateDirectory)) }

    func validate() throws {
        for argument in pidArguments { try argument.check() }
        if let empty = names.first(where: { $0.isEmpty }) { throw ValidationError("-n '\(empty)': give the program's name (e.g. -n nginx)") }
        SymbolNames.mangled = mangled
    }

    /// The command-line error when the processes given do not suit the command: none (unless
    /// `optional`), or more than one for a command that works on one (`single`, naming `command`).
    func requireTargets(single: Bool = false, optional: Bool = false, command: String) throws {
        if pidArguments.isEmpty && names.isEmpty {
            if optional { return }
            throw ValidationError(single ? "give -p PID" : "give -p PID (several: -p PID,PID) or -n NAME")
        }
        if single && (isMany || !names.isEmpty) {
            throw ValidationError("\(command) works on one process; give one pid with -p")
        }
    }

    /// The processes meant, each once: the -p pids in order, then those of each -n NAME (ascending).
    /// A NAME that matches no process is an error (naming it); so is a pid that does not exist.
    func targets() throws -> [Int32] {
        var pids = explicitPIDs
        var seen = Set(pids)
        for name in names {
            let found = ProcessSet.named(name)
            if found.isEmpty {
                throw GraftError.usage("-n \(name): no process runs a program named \(name) (graft matches the executable's file name, or the comm `ps -o comm` shows)")
            }
            for pid in found where seen.insert(pid).inserted { pids.append(pid) }
        }
        return pids
    }
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let range = rest.range(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

extension Substring {
    func range(of target: String) -> Range<Substring.Index>? {
        var index = startIndex
        while index < endIndex {
            if self[index...].hasPrefix(target) {
                return index..<self.index(index, offsetBy: target.count)
            }
            index = self.index(after: index)
        }
        return nil
    }
}
