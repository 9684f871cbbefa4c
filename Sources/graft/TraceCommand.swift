import ArgumentParser
import GraftCore
import GraftKit
import GraftELF
import GraftPtrace
import Glibc

struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Single-step a thread of a running process: instruction trace, per-function counts, call tree, flame graph.",
        discussion: """
        Without --function, steps the main thread (or --tid) from now on, for --steps instructions or \
        --duration seconds (or until Ctrl-C). With --function, waits until a thread enters LOCATION and \
        traces that call until it returns, --calls times. Prints one line per instruction, unless \
        --summary, --folded or --svg ask for the summary (per-function counts and the call tree) instead. \
        Other threads keep running (--all-stop stops them). With `-- COMMAND` graft starts COMMAND and \
        traces its main (or --function). Every exit path removes graft's breakpoints and detaches.
        Examples:
          graft trace -p 4242 --steps 20 --disasm
          graft trace -p 4242 --function trace_a --summary
          graft trace -p 4242 --function trace_a --depth 1 --json
          graft trace -p 4242 --function main.spin --signals skip --summary
          graft trace -p 4242 --duration 2 --folded out.folded --svg out.svg
          graft trace --function trace_a --summary -- ./trace_calls
        """)

    @Option(name: [.customShort("p"), .customLong("pid")], parsing: .unconditional,
            help: ArgumentHelp("The process to trace (or give `-- COMMAND`).", valueName: "pid"))
    var pidArgument: ProcessID?
    /// A positive number, when given, once `validate()` has run.
    var pid: Int32? { pidArgument.map { $0.value ?? 0 } }

    @Option(name: .customLong("tid"), parsing: .unconditional, help: ArgumentHelp("The thread to step (default: the main thread).", valueName: "TID"))
    var tidArgument: ProcessID?
    /// A positive number, when given, once `validate()` has run.
    var tid: Int32? { tidArgument.map { $0.value ?? 0 } }

    @Option(name: .long, help: ArgumentHelp("End after this many instructions.", valueName: "N"))
    var steps: UInt64?

    @Option(name: .long, help: ArgumentHelp("End after this many seconds.", valueName: "SECONDS"))
    var duration: Double?

    @Option(name: .long, help: ArgumentHelp("Trace calls of this function (LOCATION), from entry to return.", valueName: "LOCATION"))
    var function: String?

    @Option(name: .long, help: ArgumentHelp("With --function: how many calls to trace (default 1).", valueName: "N"))
    var calls: Int = 1

    @Option(name: .long, help: ArgumentHelp("Step into calls only down to this depth (1: the function itself); deeper calls run at full speed.", valueName: "D"))
    var depth: Int?

    @Flag(name: .long, help: "Show each instruction's text (capstone).")
    var disasm = false

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    @Flag(name: .long, help: "Print per-function counts and the call tree instead of every instruction.")
    var summary = false

    @Option(name: .long, help: ArgumentHelp("Write folded stacks (flamegraph.pl, inferno, speedscope) to FILE.", valueName: "FILE"))
    var folded: String?

    @Option(name: .long, help: ArgumentHelp("Write a flame graph SVG (zoom on click) to FILE.", valueName: "FILE"))
    var svg: String?

    @Flag(name: .customLong("all-stop"), help: "Keep the other threads stopped while a thread is stepped.")
    var allStop = false

    @Option(name: .long, help: ArgumentHelp("Signal handlers that interrupt the stepped thread: step (trace them) or skip (let them run free). Default: skip runtime signals (SIGURG: Go's preemption; SIGPROF), step the others.", valueName: "step|skip"))
    var signals: SignalsChoice?

    enum SignalsChoice: String, ExpressibleByArgument {
        case step, skip
    }

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Journal directory.", visibility: .hidden))
    var stateDirectory: String?

    var command: [String] { Passthrough.command }

    /// Per-instruction lines unless the user asked for the summary or a file.
    var perStep: Bool { !summary && folded == nil && svg == nil }

    @Flag(name: .long, help: "Print linkage (mangled) names of C++ and Rust functions instead of demangled ones.")
    var mangled = false

    func validate() throws {
        SymbolNames.mangled = mangled
        try pidArgument?.check()
        try tidArgument?.check(option: "--tid", what: "a thread id")
        if Passthrough.hasTerminator && command.isEmpty { throw ValidationError("give a command to start after `--`") }
        if pid == nil && command.isEmpty { throw ValidationError("give -p PID, or a command after `--`") }
        if pid != nil && !command.isEmpty { throw ValidationError("give -p PID or `-- COMMAND`, not both") }
        if let steps, steps == 0 { throw ValidationError("--steps must be at least 1") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be a positive number of seconds") }
        if calls < 1 { throw ValidationError("--calls must be at least 1") }
        if calls != 1 && function == nil && command.isEmpty { throw ValidationError("--calls needs --function LOCATION") }
        if let depth, depth < 1 { throw ValidationError("--depth must be at least 1") }
        if tid != nil && function != nil { throw ValidationError("--tid and --function exclude each other: --function traces whichever thread calls it") }
        if tid != nil && !command.isEmpty { throw ValidationError("--tid needs -p PID") }
        for path in [folded, svg].compactMap({ $0 }) where path.isEmpty { throw ValidationError("--folded and --svg need a file name") }
    }

    func run() throws {
        var function = function
        // A pattern must name exactly one function: one thread is traced through one function.
        if let pattern = function, pattern.contains(where: { "*?[".contains($0) }),
           pid != nil || !Graft.namesProgramFunction(pattern, command: command.first ?? "") {
            guard let pid else {
                throw GraftError.usage("'\(pattern)' is a pattern: patterns need -p PID (a program graft starts has not loaded its libraries yet)")
            }
            let matches = try Graft(journal: Journal(directory: stateDirectory)).hookSpecs(pid: pid, locations: [pattern], template: HookSpec(location: ""))
            guard matches.count == 1 else {
                throw GraftError.usage("--function takes one function, and '\(pattern)' matches \(matches.count): \(matches.prefix(5).map(\.location).joined(separator: ", "))\(matches.count > 5 ? ", …" : "")")
            }
            function = matches[0].location
        }
        let options = TraceOptions(tid: tid, steps: steps, duration: duration, function: function, calls: calls, depth: depth,
                                   disassemble: disasm, reportSteps: perStep, allStop: allStop,
                                   signals: signals.map { $0 == .step ? .step : .skip } ?? .auto)
        let journal = Journal(directory: stateDirectory)
        let session: TraceSession
        if let pid {
            session = TraceSession(pid: pid, options: options, journal: journal)
        } else {
            session = try TraceSession(launching: command, options: options, journal: journal)
        }
        // Refuse unwritable output files before touching the process.
        for path in [folded, svg].compactMap({ $0 }) { try checkWritable(path) }
        let printer = TracePrinter(json: json, perStep: perStep, disasm: disasm, launched: !command.isEmpty)
        TerminationSignals.deferAll(holdStop: command.isEmpty, announceStop: true, session: true)
        let result: TraceSummary
        var reportError: Error?
        do {
            result = try session.run(
                stopCheck: { TerminationSignals.sessionEnd.map { HookSessionEnd.signal($0) } },
                flush: { printer.flush() },
                onEvent: { printer.event($0) },
                onEnd: { summary in
                    // Launch mode: report before waiting for the command, which may run on.
                    do { try report(summary, pid: session.pid, printer: printer) } catch { reportError = error }
                })
        } catch {
            printer.clearStatus()
            throw error
        }
        if let reportError { throw reportError }
        TerminationSignals.restoreDefaults()
        if !result.codeRestored {
            throw GraftError.usage("the code of process \(session.pid) could not be verified after removing the breakpoints")
        }
        if let status = session.launchedExitStatus { throw CommandFailed(code: status) }
        if case .signal(let signal) = result.end { throw CommandFailed(code: 128 + signal) }
    }
}

extension TraceCommand {
    /// The files, then the summary.
    func report(_ result: TraceSummary, pid: Int32, printer: TracePrinter) throws {
        printer.clearStatus()
        let stacks = result.profile.foldedStacks()
        if let folded { try writeFile(folded, FlameGraph.folded(stacks)) }
        if let svg {
            let subtitle = "\(result.steps) instructions, thread \(result.tid.map(String.init) ?? "-") of process \(pid)"
            try writeFile(svg, FlameGraph.svg(stacks, title: "graft trace: " + (function ?? "process \(pid)"), subtitle: subtitle))
        }
        printer.summary(result, pid: pid, full: !perStep || summary, files: [folded, svg].compactMap { $0 })
    }
}

/// Checks FILE can be written without creating it (a trace that fails leaves no empty file).
private func checkWritable(_ path: String) throws {
    if access(path, F_OK) == 0 {
        guard access(path, W_OK) == 0 else { throw GraftError.usage("cannot write \(path): \(String(cString: strerror(errno)))") }
        return
    }
    let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
    guard access(directory.isEmpty ? "/" : directory, W_OK | X_OK) == 0 else {
        throw GraftError.usage("cannot write \(path): \(String(cString: strerror(errno)))")
    }
}

private func writeFile(_ path: String, _ text: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw GraftError.usage("cannot write \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 {
            if errno == EINTR { continue }
            throw GraftError.usage("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        done += n
    }
}

/// Formats trace events: a line (or JSON object) per instruction, then the summary.
final class TracePrinter {
    let json: Bool
    let perStep: Bool
    let disasm: Bool
    let status: StatusLine
    var steps: UInt64 = 0
    var current = ""
    let started = monotonicNanoseconds()

    init(json: Bool, perStep: Bool, disasm: Bool, launched: Bool = false) {
        self.status = StatusLine(sharedTerminal: launched)
        self.json = json
        self.perStep = perStep
        self.disasm = disasm
    }

    func event(_ event: HookEvent) {
        switch event {
        case .step(let step):
            steps = step.index
            if json {
                emit(JSON.object([("event", "step"), ("n", .uint(step.index)), ("tid", .int(Int64(step.tid))), ("pc", .string(hex(step.pc))),
                                  ("module", step.function.module.map { .string($0) } ?? .null),
                                  ("function", step.function.jsonName.map { .string($0) } ?? .null),
                                  ("offset", .uint(step.offset)), ("depth", .int(Int64(step.depth))),
                                  ("text", step.text.map { .string($0) } ?? .null)]).serialized)
            } else {
                let location = step.location
                if let text = step.text {
                    let pad = location.count < 32 ? String(repeating: " ", count: 32 - location.count) : " "
                    emit("\(hex(step.pc))  \(location)\(pad)\(text)")
                } else {
                    emit("\(hex(step.pc))  \(location)")
                }
            }
            if status.enabled { current = step.location }
        case .traceCall(let call):
            if json {
                var fields: [(String, JSON)] = [("event", call.began ? "call" : "call_end"), ("tid", .int(Int64(call.tid))),
                                                ("function", .string(call.function)), ("number", .int(Int64(call.number)))]
                if !call.began { fields.append(("instructions", .uint(call.instructions))) }
                emit(JSON.object(fields).serialized)
            } else if perStep {
                emit(call.began ? "# call \(call.number): thread \(call.tid) entered \(call.function)"
                                : "# call \(call.number): \(call.function) returned after \(call.instructions) instructions")
            }
            current = call.function
        case .armed(let hooks):
            for hook in hooks {
                if json {
                    emit(JSON.object([("event", "armed"), ("function", .string(hook.function)), ("address", .string(hex(hook.address))),
                                      ("instruction", .string(hook.instruction)), ("strategy", .string(hook.strategy))]).serialized)
                } else {
                    clearStatus()
                    writeStandardError("graft: waiting for a call of \(hook.function) at \(hex(hook.address))\n")
                }
            }
        case .notice(let text):
            status.notice(text, json: json)
        case .traceProgress(let count, let function):
            steps = count
            current = function
        case .hit, .returned, .watched:
            break
        }
    }

    private func emit(_ line: String) { status.emit(line) }

    func flush() {
        status.flush {
            let seconds = max(Double(monotonicNanoseconds() - started) / 1e9, 1e-9)
            return "graft: \(steps) steps (\(Int(Double(steps) / seconds))/s)\(current.isEmpty ? "" : " in \(current)") (Ctrl-C to stop)"
        }
    }

    func clearStatus() { status.clear() }

    func summary(_ result: TraceSummary, pid: Int32, full: Bool, files: [String]) {
        let profile = result.profile
        let seconds = max(Double(result.elapsedNanoseconds) / 1e9, 1e-9)
        let functions = profile.functionStats()
        if json {
            let list = functions.map { stats -> JSON in
                var fields: [(String, JSON)] = [("module", stats.function.module.map { .string($0) } ?? .null),
                                                ("function", stats.function.jsonName.map { .string($0) } ?? .null),
                                                ("calls", .uint(stats.calls)), ("self", .uint(stats.selfCount)), ("total", .uint(stats.total))]
                if stats.steppedOver > 0 { fields.append(("stepped_over", .uint(stats.steppedOver))) }
                return .object(fields)
            }
            let tree = profile.treeLines().map { line -> JSON in
                let function = profile.functions[line.node.function]
                var fields: [(String, JSON)] = [("depth", .int(Int64(line.depth))), ("module", function.module.map { .string($0) } ?? .null),
                                                ("function", function.jsonName.map { .string($0) } ?? .null),
                                                ("calls", .uint(line.node.calls)), ("self", .uint(line.node.selfCount)), ("total", .uint(line.total))]
                if line.node.steppedOver > 0 { fields.append(("stepped_over", .uint(line.node.steppedOver))) }
                return .object(fields)
            }
            print(JSON.object([("event", "summary"), ("steps", .uint(result.steps)), ("functions", .array(list)), ("tree", .array(tree)),
                               ("single_steps", .uint(result.singleSteps)), ("calls_traced", .int(Int64(result.callsTraced))),
                               ("tid", result.tid.map { .int(Int64($0)) } ?? .null), ("pid", .int(Int64(pid))),
                               ("elapsed_ns", .uint(result.elapsedNanoseconds)), ("steps_per_second", .double(Double(result.steps) / seconds)),
                               ("signals_delivered", .int(Int64(result.signalsDelivered))),
                               ("handlers_skipped", .int(Int64(result.handlerRunsSkipped))),
                               ("ended_by", .string(describe(result.end, countOption: "--steps"))), ("code_restored", .bool(result.codeRestored))]).serialized)
            fflush(nil)
            return
        }
        let thread = result.tid.map { "thread \($0)" } ?? "no thread"
        let rate = Int(Double(result.steps) / seconds)
        let calls = result.callsTraced > 0 ? ", \(result.callsTraced) call\(result.callsTraced == 1 ? "" : "s") traced" : ""
        let footer = "\(result.steps) instructions of \(thread) in \(format1(seconds)) s (\(rate)/s)\(calls); ended by \(describe(result.end, countOption: "--steps")); " +
            "breakpoints removed\(result.codeRestored ? ", code verified" : ", CODE NOT VERIFIED")" + {
                if case .targetExited(let status) = result.end { return "; process \(pid) \(status.exitDescription)" }
                if case .targetExec = result.end { return "; process \(pid) runs a new program" }
                return ", process \(pid) running"
            }()
        if full {
            var rows = [["FUNCTION", "CALLS", "SELF", "TOTAL"]]
            let steppedOver = functions.contains { $0.steppedOver > 0 }
            if steppedOver { rows[0].append("STEPPED OVER") }
            for stats in functions {
                var row = [stats.function.displayName, String(stats.calls), String(stats.selfCount), String(stats.total)]
                if steppedOver { row.append(stats.steppedOver > 0 ? String(stats.steppedOver) : "") }
                rows.append(row)
            }
            for line in Output.table(rows) { print(line) }
            print("")
            print("call tree (calls; instructions self / total):")
            for line in profile.treeLines() {
                let function = profile.functions[line.node.function]
                let over = line.node.steppedOver > 0 ? ", \(line.node.steppedOver) stepped over" : ""
                print("\(String(repeating: "  ", count: line.depth))\(function.displayName)  \(line.node.calls)×\(over)  \(line.node.selfCount) / \(line.total)")
            }
            print("")
        }
        for file in files { print("wrote \(file)") }
        if result.handlerRunsSkipped > 0 {
            let bySignal = result.handlersSkipped.sorted { $0.key < $1.key }.map { "\($0.value) \(signalName($0.key))" }.joined(separator: ", ")
            print("signal handlers run free, not stepped: \(bySignal) (--signals step traces them)")
        }
        print(footer)
        fflush(nil)
    }
}
