import ArgumentParser
import GraftCore
import GraftKit

struct InjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inject",
        abstract: "Load a shared library into a running process (its constructors run); journalled, listed.",
        discussion: """
        The target's own loader loads it (dlopen, on a new thread of the target, so a stopped thread \
        holding the malloc or loader lock cannot deadlock it); a process in another mount namespace \
        gets the very file given, through a memfd. Loaded once per process: a second inject of the \
        same library reports where it already is. `graft unpatch -p PID --all` unloads it.
        Examples:
          graft inject -p 4242 ./libfix.so
          graft inject -p 4242 ./libfix.so --json
        """)

    @OptionGroup var process: ProcessOptions

    @Argument(help: "The shared library (.so) to load.")
    var library: String

    func validate() throws {
        try process.requireTargets(single: true, command: "inject")
    }

    func run() throws {
        let outcome = try withTerminationDeferred {
            try process.cancellableGraft.inject(pid: process.pid, path: library)
        }
        if process.json {
            Output.json(outcome.json(pid: process.pid))
            return
        }
        let record = outcome.record
        let module = record.name.split(separator: ".").first.map(String.init) ?? record.name
        if outcome.alreadyLoaded {
            Output.line("\(record.path) is already loaded in process \(process.pid) at \(record.base) (graft loaded it at \(record.loadedAt)); nothing done")
        } else {
            let how = outcome.loaderThread.map { "\(outcome.loadedBy) on a new thread (\($0))" } ?? outcome.loadedBy
            Output.line("loaded \(record.path) into process \(process.pid) at \(record.base)-\(record.end) by \(how)\(outcome.viaMemfd ? ", handed over as \(record.mappedAs)" : "")")
            let ms = Double(outcome.stopWindowNanoseconds) / 1e6, total = Double(outcome.elapsedNanoseconds) / 1e6
            let stopped = record.loader == "graft" ? "process stopped for \(formatMilliseconds(ms))"
                : "one thread stopped for \(formatMilliseconds(ms)) (the others ran on)"
            Output.line("build-id \(record.buildID ?? "none"); \(stopped); took \(formatMilliseconds(total))")
        }
        Output.line("its functions are LOCATIONs: \(module):NAME (graft symbols -p \(process.pid) '\(module):*')")
    }
}
