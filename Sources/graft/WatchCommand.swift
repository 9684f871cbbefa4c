import ArgumentParser
import GraftCore
import GraftKit
import GraftPtrace
import Glibc

struct WatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Report every write (or access) of a variable in a running process (a debug register: no byte changes).",
        discussion: """
        Prints one line per write with the thread, the old and new value and the instruction that \
        wrote, until Ctrl-C, SIGTERM, --count, --duration or the target's exit; then clears the debug \
        registers of every thread and prints a summary. VARIABLE: NAME, MODULE:NAME, NAME+OFFSET or \
        0xADDRESS. A debug register watches 1, 2, 4 or 8 bytes at an address that is a multiple of \
        the length (default: the variable's size).
        Examples:
          graft watch -p 4242 counter
          graft watch -p 4242 price_service:total_cents --backtrace --count 5
          graft watch -p 4242 'table+8' --len 8 --rw --json
          graft watch counter -- ./price_service
        """)

    @Option(name: [.customShort("p"), .customLong("pid")], parsing: .unconditional,
            help: ArgumentHelp("The process to watch (or give `-- COMMAND`).", valueName: "pid"))
    var pidArgument: ProcessID?
    var pid: Int32? { pidArgument.map { $0.value ?? 0 } }

    @Argument(help: "The variable (NAME, MODULE:NAME, NAME+OFFSET, 0xADDRESS).")
    var variable: String

    @Flag(name: .customLong("write"), help: "Report writes (the default).")
    var writes = false

    @Flag(name: .customLong("rw"), help: "Report reads and writes (x86 cannot watch reads alone).")
    var readsAndWrites = false

    @Option(name: .customLong("len"), help: ArgumentHelp("Bytes to watch: 1, 2, 4 or 8 (default: the variable's size).", valueName: "N"))
    var length: Int?

    @Flag(name: .long, help: "Report a stack trace with every write (libunwind, .eh_frame).")
    var backtrace = false

    @Option(name: .long, help: ArgumentHelp("End after this many writes (accesses with --rw).", valueName: "N"))
    var count: Int?

    @Option(name: .long, help: ArgumentHelp("End after this many seconds.", valueName: "SECONDS"))
    var duration: Double?

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    @Flag(name: [.customShort("q"), .long], help: "Print only the summary, not every write.")
    var quiet = false

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Journal directory.", visibility: .hidden))
    var stateDirectory: String?

    @Flag(name: .long, help: "Print linkage (mangled) names of C++ and Rust functions instead of demangled ones.")
    var mangled = false

    var command: [String] { Passthrough.command }

    func validate() throws {
        SymbolNames.mangled = mangled
        try pidArgument?.check()
        if Passthrough.hasTerminator && command.isEmpty { throw ValidationError("give a command to start after `--`") }
        if pid == nil && command.isEmpty { throw ValidationError("give -p PID, or a command after `--`") }
        if pid != nil && !command.isEmpty { throw ValidationError("give -p PID or `-- COMMAND`, not both") }
        if writes && readsAndWrites { throw ValidationError("give --write or --rw, not both") }
        if let length, !DebugControl.lengths.contains(length) {
            throw ValidationError("--len takes 1, 2, 4 or 8: the lengths a debug register watches")
        }
        if let count, count <= 0 { throw ValidationError("--count must be at least 1") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be a positive number of seconds") }
    }

    func run() throws {
        let spec = WatchSpec(location: variable, condition: readsAndWrites ? .access : .write, length: length, backtrace: backtrace)
        let limits = HookLimits(count: count, duration: duration)
        let journal = Journal(directory: stateDirectory)
        let session = try pid.map { HookSession(pid: $0, specs: [], limits: limits, journal: journal) }
            ?? HookSession(launching: command, specs: [], limits: limits, journal: journal)
        session.watch = spec
        session.reportsCalls = !quiet
        let printer = WatchPrinter(json: json, quiet: quiet, launched: !command.isEmpty, unit: readsAndWrites ? "access" : "write")
        printer.hitsSoFar = { [session] in session.hitsSoFar }
        printer.ending = SessionEnding(count: count, duration: duration, pid: pid, unit: printer.unit)
        TerminationSignals.deferAll(holdStop: command.isEmpty, announceStop: true, session: true)
        let summary: HookSummary
        do {
            summary = try session.run(
                stopCheck: { TerminationSignals.sessionEnd.map { HookSessionEnd.signal($0) } },
                flush: { printer.flush() },
                onEvent: { printer.event($0) },
                onEnd: { printer.summary($0) })
        } catch {
            printer.status.clear()
            throw error
        }
        TerminationSignals.restoreDefaults()
        if !summary.codeRestored {
            throw GraftError.usage("the debug registers of process \(session.pid) could not all be cleared")
        }
        if let status = session.launchedExitStatus { throw CommandFailed(code: status) }
        if case .signal(let signal) = summary.end { throw CommandFailed(code: 128 + signal) }
    }
}

/// `graft watch` output: one line (or JSON object) per write, then a summary.
final class WatchPrinter {
    let json: Bool
    let quiet: Bool
    let unit: String
    let status: StatusLine
    var hitsSoFar: () -> Int = { 0 }
    var ending = SessionEnding(count: nil, duration: nil, pid: nil, unit: "write")
    private var variable = ""

    init(json: Bool, quiet: Bool, launched: Bool, unit: String) {
        self.json = json
        self.quiet = quiet
        self.unit = unit
        self.status = StatusLine(sharedTerminal: launched)
    }

    func event(_ event: HookEvent) {
        switch event {
        case .armed(let watches):
            ending.announceIfUnbounded(status)
            for watch in watches {
                variable = watch.function
                if json {
                    status.emit(JSON.object([("event", "armed"), ("watch", .string(watch.location)), ("variable", .string(watch.function)),
                                             ("address", .string(hex(watch.address))), ("condition", .string(watch.instruction)),
                                             ("strategy", .string(watch.strategy))]).serialized)
                } else if !quiet {
                    status.emit("watching \(watch.function): \(watch.instruction) (\(watch.strategy))")
                }
            }
        case .watched(let hit):
            guard !quiet else { break }
            json ? jsonLine(hit) : textLine(hit)
        case .notice(let text):
            status.notice(text, json: json)
        case .hit, .returned, .step, .traceCall, .traceProgress:
            break
        }
    }

    /// The value as a signed number of the watched width (`-1`, not `4294967295`).
    private func signed(_ value: UInt64, _ length: Int) -> Int64 {
        let shift = UInt64(64 - 8 * length)
        return Int64(bitPattern: value << shift) >> Int64(shift)
    }

    private func textLine(_ hit: WatchHit) {
        let old = signed(hit.oldValue, hit.length), new = signed(hit.newValue, hit.length)
        let change = hit.changed ? "\(old) -> \(new)" : "\(new) (unchanged)"
        let by = hit.instruction.map { "\(hit.function) (\($0))" } ?? "\(hit.function) (the instruction before \(hex(hit.pc)))"
        status.emit("\(clock(hit.wallTime)) [\(hit.tid)] \(hit.location) \(change) by \(by)")
        for (i, frame) in hit.backtrace.enumerated() { status.emit("    #\(i) \(frame.description)") }
    }

    private func jsonLine(_ hit: WatchHit) {
        var fields: [(String, JSON)] = [
            ("event", "watch"), ("watch", .string(hit.location)), ("tid", .int(Int64(hit.tid))), ("address", .string(hex(hit.address))),
            ("length", .int(Int64(hit.length))), ("old", .string(hex(hit.oldValue))), ("new", .string(hex(hit.newValue))),
            ("old_value", .int(signed(hit.oldValue, hit.length))), ("new_value", .int(signed(hit.newValue, hit.length))),
            ("changed", .bool(hit.changed)), ("pc", .string(hex(hit.pc))),
            ("instruction_address", hit.instructionAddress.map { .string(hex($0)) } ?? .null),
            ("instruction", hit.instruction.map { .string($0) } ?? .null), ("function", .string(hit.function)),
            ("time_ns", .uint(hit.wallTime)),
        ]
        if !hit.backtrace.isEmpty {
            fields.append(("backtrace", .array(hit.backtrace.map(\.json))))
        }
        status.emit(JSON.object(fields).serialized)
    }

    func flush() {
        status.flush { ending.statusLine(hitsSoFar()) }
    }

    func summary(_ summary: HookSummary) {
        status.clear()
        let seconds = max(Double(summary.elapsedNanoseconds) / 1e9, 1e-9)
        let total = summary.totalHits
        let ended = describe(summary.end, countOption: "--count")
        if json {
            print(JSON.object([("event", "summary"), ("variable", .string(variable)), (plural(unit), .int(Int64(total))),
                               ("seconds", .double(seconds)), ("ended_by", .string(ended)),
                               ("debug_registers_cleared", .bool(summary.codeRestored))]).serialized)
        } else {
            if !quiet { print("") }
            print("\(total) \(total == 1 ? unit : plural(unit)) of \(variable) in \(format1(seconds)) s; ended by \(ended); debug registers \(summary.codeRestored ? "cleared" : "NOT ALL CLEARED")")
        }
        fflush(nil)
    }
}
