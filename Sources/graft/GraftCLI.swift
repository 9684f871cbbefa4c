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
        do {
            var command = try GraftCommand.parseAsRoot(arguments)
            try command.run()
            return 0
        } catch let error as GraftError {
            Output.error(error.description)
            return 1
        } catch let exit as CommandFailed {
            return exit.code
        } catch {
            let code = GraftCommand.exitCode(for: error)
            if code == .success {
                print(GraftCommand.fullMessage(for: error))
                return 0
            }
            let message = GraftCommand.message(for: error)
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
        subcommands: [SymbolsCommand.self, InjectCommand.self, PatchCommand.self, ListCommand.self, UnpatchCommand.self, HookCommand.self, WatchCommand.self, TraceCommand.self, DemoCommand.self]
    )
}

/// Options every command that targets a process shares.
struct ProcessOptions: ParsableArguments {
    @Option(name: [.customShort("p"), .customLong("pid")], parsing: .unconditional,
            help: ArgumentHelp("The process to work on.", valueName: "pid"))
    var pidArgument: ProcessID
    /// A positive number once `validate()` has run, as it has before any command's `run()`.
    var pid: Int32 { pidArgument.value ?? 0 }

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Journal directory (default: $GRAFT_STATE_DIR, /run/graft for root, else $XDG_RUNTIME_DIR/graft).", visibility: .hidden))
    var stateDirectory: String?

    @Flag(name: .long, help: "Print linkage (mangled) names of C++ and Rust functions instead of demangled ones.")
    var mangled = false

    var graft: Graft { Graft(journal: Journal(directory: stateDirectory)) }

    func validate() throws {
        try pidArgument.check()
        SymbolNames.mangled = mangled
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
