import ArgumentParser
import GraftCore
import GraftKit
import GraftELF
import Glibc

extension HookSummaryOrder: ExpressibleByArgument {}

struct HookCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hook",
        abstract: "Report every call of functions in a running process (int3 breakpoints that stay armed).",
        discussion: """
        Prints one line per call until Ctrl-C, SIGTERM, SIGHUP, --count, --duration or the target's exit, \
        then removes every breakpoint, checks the code is as before, and prints a summary. With \
        `-- COMMAND` graft starts COMMAND, arms the hooks before its main runs, and exits with its status.
        Examples:
          graft hook -p 4242 hook_f --args 2 --returns
          graft hook -p 4242 libc:open --args 2
          graft hook -p 4242 libc:getppid --backtrace --count 10
          graft hook -p 4242 value_a --set-return 7 --skip
          graft hook -p 4242 price --hardware
          graft hook -p 4242 hook_f --args 2 --filter 'arg0 > 2 && tid == 4243'
          graft hook -p 4242 'libc:str*' --returns --quiet --sort time
          graft hook hook_f --returns -- ./hook_count 100
        """)

    @Option(name: [.customShort("p"), .customLong("pid")], parsing: .unconditionalSingleValue,
            help: ArgumentHelp("The process to hook (several: -p 8153,8293, or -p repeated; or give `-- COMMAND`).", valueName: "pid"))
    var pidArguments: [ProcessIDList] = []

    @Option(name: [.customShort("n"), .customLong("name")],
            help: ArgumentHelp("Hook every process whose executable (or comm) is NAME.", valueName: "name"))
    var names: [String] = []

    @Flag(name: .long, help: "Also hook the processes the hooked ones fork after the session started (their calls carry their pid).")
    var follow = false

    /// The one process of a plain session (-p with one pid), once `validate()` has run.
    var pid: Int32? { pidArguments.isEmpty ? nil : pidArguments.flatMap(\.items).first?.value ?? 0 }
    /// Several processes (a list, -n) or --follow: one session per process (`HookFleet`).
    var isFleet: Bool { follow || !names.isEmpty || pidArguments.flatMap(\.items).count > 1 }

    @Argument(help: "Functions to hook (LOCATION: NAME, MODULE:NAME, NAME+OFFSET, 0xADDRESS).")
    var locations: [String] = []

    @Option(name: .customLong("args"), help: ArgumentHelp("Report this many arguments: typed and named from DWARF (or a libc prototype) when known, else integer registers (SysV: rdi, rsi, rdx, rcx, r8, r9, then the stack).", valueName: "N"))
    var argumentCount: Int = 0

    @Flag(name: .long, help: "Report arguments and return values as raw registers even when their types are known.")
    var raw = false

    @Flag(name: .long, help: "Report a stack trace with every call (libunwind, .eh_frame).")
    var backtrace = false

    @Flag(name: .long, help: "Report each call's return value (typed when known: a float or double from xmm0; else rax in hex) and duration.")
    var returns = false

    @Option(name: .customLong("set-return"), parsing: .unconditional,
            help: ArgumentHelp("Make the hooked function return this integer (decimal or 0x hex, may be negative).", valueName: "INT"))
    var setReturnArgument: Integer64?
    var setReturn: Int64? { setReturnArgument?.value }

    @Flag(name: .long, help: "With --set-return: return at once without running the function.")
    var skip = false

    @Option(name: .long, help: ArgumentHelp("End after this many calls in total.", valueName: "N"))
    var count: Int?

    @Option(name: .long, help: ArgumentHelp("End after this many seconds.", valueName: "SECONDS"))
    var duration: Double?

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    @Flag(name: [.customShort("q"), .long], help: "Print only the summary, not every call.")
    var quiet = false

    @Option(name: .long, help: ArgumentHelp("Keep only calls matching EXPR, e.g. 'tid == 4243', 'arg0 > 2 && ret < 0' (fields tid, pid, ret, arg0…arg15; == != < <= > >=; && || ! and parentheses; see docs/hooks.md).", valueName: "EXPR"))
    var filter: String?

    @Option(name: .long, help: ArgumentHelp("Order of the summary: hits (default) or time (total time in the calls; needs --returns).", valueName: "hits|time"))
    var sort: HookSummaryOrder = .hits

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Journal directory.", visibility: .hidden))
    var stateDirectory: String?

    /// After `--` (split off by GraftCLI.run).
    var command: [String] { Passthrough.command }

    @Flag(name: .long, help: "Print linkage (mangled) names of C++ and Rust functions instead of demangled ones.")
    var mangled = false

    @Option(name: .customLong("max-hooks"), help: "The most functions patterns may bring (default 1000).")
    var maxHooks = 1_000

    @Flag(name: .customLong("no-wait"), help: "Refuse a LOCATION in a library the process has not loaded yet, instead of hooking it when the process loads it.")
    var noWait = false

    @Flag(name: .long, help: "Use the CPU's debug registers (DR0–DR3) instead of int3s: no byte of code changes; at most four functions (three with --returns).")
    var hardware = false

    func validate() throws {
        SymbolNames.mangled = mangled
        for argument in pidArguments { try argument.check() }
        if locations.isEmpty { throw ValidationError("give at least one LOCATION to hook") }
        if Passthrough.hasTerminator && command.isEmpty { throw ValidationError("give a command to start after `--`") }
        if pid == nil && names.isEmpty && command.isEmpty { throw ValidationError("give -p PID, -n NAME, or a command after `--`") }
        if (pid != nil || !names.isEmpty) && !command.isEmpty { throw ValidationError("give -p PID (or -n NAME) or `-- COMMAND`, not both") }
        if follow && !command.isEmpty { throw ValidationError("--follow goes with -p PID or -n NAME, not with `-- COMMAND`") }
        if skip && setReturn == nil { throw ValidationError("--skip needs --set-return INT (the value to return)") }
        if (setReturn != nil) && locations.count > 1 { throw ValidationError("--set-return applies to one LOCATION; give exactly one") }
        if argumentCount < 0 || argumentCount > 16 { throw ValidationError("--args takes 0 to 16") }
        if let count, count <= 0 { throw ValidationError("--count must be at least 1") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be a positive number of seconds") }
        if sort == .time && !returns && setReturn == nil { throw ValidationError("--sort time needs --returns (the calls' durations)") }
        if let filter { _ = try HookFilter(parsing: filter) }
    }

    func run() throws {
        if isFleet {
            try runFleet()
            return
        }
        var template = HookSpec(location: "", argumentCount: argumentCount, backtrace: backtrace, returns: returns,
                                setReturn: setReturn, skip: skip)
        template.raw = raw
        let specs: [HookSpec]
        if let pid {
            specs = try Graft(journal: Journal(directory: stateDirectory)).hookSpecs(pid: pid, locations: locations, template: template, maxHooks: maxHooks)
        } else {
            if let pattern = locations.first(where: { $0.contains(where: { "*?[".contains($0) }) }) {
                throw GraftError.usage("'\(pattern)' is a pattern: patterns need -p PID (a program graft starts has not loaded its libraries yet)")
            }
            specs = locations.map { var spec = template; spec.location = $0; return spec }
        }
        if setReturn != nil && specs.count > 1 {
            throw GraftError.usage("--set-return applies to one function; the pattern matched \(specs.count)")
        }
        let limits = HookLimits(count: count, duration: duration)
        let journal = Journal(directory: stateDirectory)
        let session: HookSession
        if let pid {
            session = HookSession(pid: pid, specs: specs, limits: limits, journal: journal)
        } else {
            session = try HookSession(launching: command, specs: specs, limits: limits, journal: journal)
        }
        session.reportsCalls = !quiet
        session.hardware = hardware
        session.waitsForLibraries = !noWait
        session.filter = try filter.map { try HookFilter(parsing: $0) }
        let printer = HookPrinter(json: json, quiet: quiet, argumentCount: argumentCount, launched: !command.isEmpty)
        printer.order = sort
        printer.filtered = filter != nil
        printer.hitsSoFar = { [session] in session.hitsSoFar }
        printer.ending = SessionEnding(count: count, duration: duration, pid: pid, unit: "call")
        TerminationSignals.deferAll(holdStop: command.isEmpty, announceStop: true, session: true)
        let summary: HookSummary
        do {
            summary = try session.run(
                stopCheck: { TerminationSignals.sessionEnd.map { HookSessionEnd.signal($0) } },
                flush: { printer.flush() },
                onEvent: { printer.event($0) },
                onEnd: { printer.summary($0) })  // launch mode: before waiting for the command
        } catch {
            printer.clearStatus()
            throw error
        }
        TerminationSignals.restoreDefaults()
        if !summary.codeRestored {
            throw GraftError.usage("the code of process \(session.pid) could not be verified after removing the breakpoints")
        }
        if let status = session.launchedExitStatus {
            throw CommandFailed(code: status)
        }
        if case .signal(let signal) = summary.end { throw CommandFailed(code: 128 + signal) }
    }
}

/// Formats hook events: text lines or JSON, buffered, with a live status line on a terminal.
final class HookPrinter {
    let json: Bool
    let quiet: Bool
    let argumentCount: Int
    let status: StatusLine
    /// The session's count (quiet mode gets no hit events to count).
    var hitsSoFar: () -> Int = { 0 }
    /// The summary's order (`--sort`).
    var order = HookSummaryOrder.hits
    /// Text mode lists this many hooks in the summary, then a count of the rest (JSON lists all).
    static let summaryRows = 50
    var names: [Int: String] = [:]

    /// Set when several processes are hooked (`HookFleet`): every line says whose call it was
    /// (`[PID/TID]`, JSON `"pid"`), and the summary is headed by the process.
    var pid: Int32?

    init(json: Bool, quiet: Bool, argumentCount: Int, launched: Bool = false, status: StatusLine? = nil, pid: Int32? = nil) {
        self.status = status ?? StatusLine(sharedTerminal: launched)
        self.pid = pid
        self.json = json
        self.quiet = quiet
        self.argumentCount = argumentCount
    }

    /// How the session ends, for the status line and the first line on a non-terminal stderr.
    var ending = SessionEnding(count: nil, duration: nil, pid: nil, unit: "call")

    func event(_ event: HookEvent) {
        switch event {
        case .armed(let hooks):
            ending.announceIfUnbounded(status)
            for hook in hooks {
                names[hook.index] = hook.location
                if json {
                    emit(JSON.object([("event", "armed")] + (pid.map { [("pid", JSON.int(Int64($0)))] } ?? []) + [("hook", .string(hook.location)), ("function", .string(hook.function)),
                                      ("address", .string(hex(hook.address))), ("instruction", .string(hook.instruction)),
                                      ("strategy", .string(hook.strategy))]).serialized)
                } else if !quiet {
                    emit("\(pid.map { "process \($0): " } ?? "")hooked \(hook.function) at \(hex(hook.address)) (\(hook.instruction): \(hook.strategy))")
                }
            }
        case .hit(let hit):
            if quiet { break }
            if json { jsonLine(hit) } else { textLine(hit) }
        case .returned(let value):
            if quiet { break }
            if json { jsonLine(value) } else { textLine(value) }
        case .notice(let text):
            status.notice(text, json: json)
        case .step, .traceCall, .traceProgress, .watched:
            break
        }
    }

    private func emit(_ line: String) { status.emit(line) }

    // MARK: - Per-call lines
    //
    // Formatted straight into the status line's byte buffer: no String, no JSON tree, no stdio per
    // call (issue 11 §3). The bytes are those of the String/JSON code this replaced:
    //   text:  `HH:MM:SS.uuuuuu [TID] LOCATION(ARGS)`, ARGS `…` without --args, else `0x1, 0x2`
    //          `HH:MM:SS.uuuuuu [TID] LOCATION returned 0xV[ (made to return 0xR)] in DURATION`
    //   json:  {"event":"hit","hook":LOCATION,"tid":N,"address":"0x…","time_ns":N,"args":["0x…"][,"backtrace":[…]]}
    //          {"event":"return","hook":LOCATION,"tid":N,"value":"0x…","duration_ns":N[,"returned":"0x…"]}

    /// Per hook (by index): the bytes every line of it repeats.
    private struct HookBytes {
        /// `] LOCATION(`
        var textHit: [UInt8]
        /// `] LOCATION returned `
        var textReturn: [UInt8]
        /// `{"event":"hit","hook":"LOCATION","tid":`
        var jsonHit: [UInt8]
        /// `{"event":"return","hook":"LOCATION","tid":`
        var jsonReturn: [UInt8]
    }
    private var hookBytes: [HookBytes?] = []
    private var wallClock = WallClockFormatter()

    private func bytes(hook: Int, location: String) -> HookBytes {
        if hook >= 0, hook < hookBytes.count, let cached = hookBytes[hook] { return cached }
        let name = JSON.string(location).serialized
        let owner = pid.map { "\"pid\":\($0)," } ?? ""
        let made = HookBytes(textHit: Array("] \(location)(".utf8), textReturn: Array("] \(location) returned ".utf8),
                             jsonHit: Array("{\"event\":\"hit\",\(owner)\"hook\":\(name),\"tid\":".utf8),
                             jsonReturn: Array("{\"event\":\"return\",\(owner)\"hook\":\(name),\"tid\":".utf8))
        if hook >= 0 {
            if hook >= hookBytes.count { hookBytes.append(contentsOf: repeatElement(nil, count: hook + 1 - hookBytes.count)) }
            hookBytes[hook] = made
        }
        return made
    }

    /// Starts a text line: `HH:MM:SS.uuuuuu [TID` then `rest` (`] LOCATION(`, `] LOCATION returned `).
    private func openTextLine(_ wallTime: UInt64, tid: Int32, _ rest: [UInt8]) -> LineBuffer {
        status.beginLine()
        let out = status.out
        wallClock.append(wallTime, to: out)
        out.append(UInt8(ascii: " "))
        out.append(UInt8(ascii: "["))
        if let pid {
            out.appendDecimal(Int64(pid))
            out.append(UInt8(ascii: "/"))
        }
        out.appendDecimal(Int64(tid))
        out.append(rest)
        return out
    }

    /// Starts a JSON line: `prefix` (`{"event":…,"hook":…,"tid":`) then the thread id.
    private func openJSONLine(_ prefix: [UInt8], tid: Int32) -> LineBuffer {
        status.beginLine()
        let out = status.out
        out.append(prefix)
        out.appendDecimal(Int64(tid))
        return out
    }

    private func textLine(_ hit: HookHit) {
        let out = openTextLine(hit.wallTime, tid: hit.tid, bytes(hook: hit.hook, location: hit.location).textHit)
        if argumentCount == 0 {
            out.append(ellipsis)
        } else if let typed = hit.typedArguments {
            for (i, argument) in typed.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")); out.append(UInt8(ascii: " ")) }
                out.append(argument.name)
                out.append(UInt8(ascii: "="))
                out.append(argument.value.text)
            }
        } else {
            for (i, argument) in hit.arguments.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")); out.append(UInt8(ascii: " ")) }
                out.appendHex(argument)
            }
        }
        out.append(UInt8(ascii: ")"))
        out.append(UInt8(ascii: "\n"))
        for (i, frame) in hit.backtrace.enumerated() { emit("    #\(i) \(frame.description)") }
    }

    private func jsonLine(_ hit: HookHit) {
        let out = openJSONLine(bytes(hook: hit.hook, location: hit.location).jsonHit, tid: hit.tid)
        out.append(addressKey)
        out.appendHex(hit.address)
        out.append(timeKey)
        out.appendDecimal(hit.wallTime)
        out.append(argsKey)
        if let typed = hit.typedArguments {
            for (i, argument) in typed.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out.append(argument.json.serialized)
            }
        } else {
            // Raw registers: {"name":"arg1","type":null,"value":"0x…","register":"rdi","raw":"0x…"}.
            let registers = hit.goABI ? rawGoRegisters : rawRegisters
            for (i, argument) in hit.arguments.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out.append(i < registers.count ? registers[i].prefix : stackArgumentPrefix(i - registers.count, i))
                out.appendHex(argument)
                out.append(rawKey)
                out.appendHex(argument)
                out.append(UInt8(ascii: "\""))
                out.append(UInt8(ascii: "}"))
            }
        }
        out.append(UInt8(ascii: "]"))
        if !hit.backtrace.isEmpty {
            out.append(",\"backtrace\":" + JSON.array(hit.backtrace.map { frame in
                .object([("pc", .string(hex(frame.pc))), ("module", frame.module.map { .string($0) } ?? .null),
                         ("function", frame.function.map { .string($0) } ?? .null), ("offset", .uint(frame.offset))])
            }).serialized)
        }
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
    }

    private func textLine(_ value: HookReturn) {
        let out = openTextLine(value.wallTime, tid: value.tid, bytes(hook: value.hook, location: value.location).textReturn)
        if let typed = value.typedValue { out.append(typed.value.text) } else { out.appendHex(value.value) }
        if value.returnedValue != value.value {
            out.append(madeToReturn)
            out.appendHex(value.returnedValue)
            out.append(UInt8(ascii: ")"))
        }
        out.append(durationIn)
        out.append(formatDuration(value.durationNanoseconds))
        out.append(UInt8(ascii: "\n"))
    }

    private func jsonLine(_ value: HookReturn) {
        let out = openJSONLine(bytes(hook: value.hook, location: value.location).jsonReturn, tid: value.tid)
        out.append(valueKey)
        out.appendHex(value.value)
        out.append(durationKey)
        out.appendDecimal(value.durationNanoseconds)
        if value.returnedValue != value.value {
            out.append(returnedKey)
            out.appendHex(value.returnedValue)
            out.append(UInt8(ascii: "\""))
        }
        if let typed = value.typedValue {
            out.append(resultKey)
            out.append(JSON.object([("type", .string(typed.type)), ("value", typed.value.json), ("register", .string(typed.register))]).serialized)
        }
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
    }

    private let ellipsis = Array("…".utf8)
    private let addressKey = Array(",\"address\":\"".utf8)
    private let timeKey = Array("\",\"time_ns\":".utf8)
    private let argsKey = Array(",\"args\":[".utf8)
    private let quote = Array("\"".utf8)
    private let commaQuote = Array(",\"".utf8)
    private let madeToReturn = Array(" (made to return ".utf8)
    private let durationIn = Array(" in ".utf8)
    private let valueKey = Array(",\"value\":\"".utf8)
    private let durationKey = Array("\",\"duration_ns\":".utf8)
    private let returnedKey = Array(",\"returned\":\"".utf8)
    private let resultKey = Array(",\"result\":".utf8)
    private let rawKey = Array("\",\"raw\":\"".utf8)

    /// `{"name":"argN","type":null,"value":"` for each argument register.
    private struct RawPrefix { let prefix: [UInt8] }
    private static func rawPrefixes(_ names: [String]) -> [RawPrefix] {
        names.enumerated().map { RawPrefix(prefix: Array("{\"name\":\"arg\($0.offset + 1)\",\"type\":null,\"register\":\"\($0.element)\",\"value\":\"".utf8)) }
    }
    private let rawRegisters = HookPrinter.rawPrefixes(["rdi", "rsi", "rdx", "rcx", "r8", "r9"])
    private let rawGoRegisters = HookPrinter.rawPrefixes(["rax", "rbx", "rcx", "rdi", "rsi", "r8", "r9", "r10", "r11"])
    private func stackArgumentPrefix(_ slot: Int, _ index: Int) -> [UInt8] {
        Array("{\"name\":\"arg\(index + 1)\",\"type\":null,\"register\":\"rsp+\(8 + slot * 8)\",\"value\":\"".utf8)
    }


    /// Called before graft blocks: push the lines out, refresh the status line.
    func flush() {
        status.flush { ending.statusLine(hitsSoFar()) }
    }

    func clearStatus() { status.clear() }

    /// A `--filter` was given: the JSON summary carries `filtered_out`.
    var filtered = false

    func summary(_ summary: HookSummary) {
        clearStatus()
        let seconds = max(Double(summary.elapsedNanoseconds) / 1e9, 1e-9)
        let sorted = order.sorted(summary.hooks)
        if json {
            let hooks = sorted.map { stats -> JSON in
                var fields: [(String, JSON)] = [("hook", .string(stats.location)), ("function", .string(stats.function)),
                                                ("hits", .int(Int64(stats.hits))), ("calls_per_second", .double(Double(stats.hits) / seconds))]
                if stats.returns > 0 {
                    fields.append(("returns", .int(Int64(stats.returns))))
                    if let p50 = stats.durationPercentile(50) { fields.append(("p50_ns", .uint(p50))) }
                    if let p99 = stats.durationPercentile(99) { fields.append(("p99_ns", .uint(p99))) }
                    fields.append(("time_ns", .uint(stats.totalTimeNanoseconds)))
                }
                return .object(fields)
            }
            print(JSON.object([("event", "summary")] + (pid.map { [("pid", JSON.int(Int64($0)))] } ?? [])
                              + [("hooks", .array(hooks)), ("total_hits", .int(Int64(summary.totalHits)))]
                              + (filtered ? [("filtered_out", .int(Int64(summary.filteredOut)))] : []) + [
                               ("seconds", .double(seconds)), ("ended_by", .string(describe(summary.end, countOption: "--count"))),
                               ("code_restored", .bool(summary.codeRestored))]).serialized)
        } else {
            var rows = [["hook", "function", "hits", "calls/s"]]
            let withReturns = summary.hooks.contains { $0.returns > 0 }
            if withReturns { rows[0] += ["p50", "p99", "time"] }
            for stats in sorted.prefix(Self.summaryRows) {
                var row = [stats.location, stats.function, String(stats.hits), String(format1(Double(stats.hits) / seconds))]
                if withReturns {
                    row.append(stats.durationPercentile(50).map(formatDuration) ?? "-")
                    row.append(stats.durationPercentile(99).map(formatDuration) ?? "-")
                    row.append(stats.returns > 0 ? formatDuration(stats.totalTimeNanoseconds) : "-")
                }
                rows.append(row)
            }
            if !quiet { print("") }
            if let pid { print("process \(pid):") }
            for line in Output.table(rows) { print(line) }
            if sorted.count > Self.summaryRows {
                let rest = sorted.dropFirst(Self.summaryRows)
                let calls = rest.reduce(0) { $0 + $1.hits }
                print("… and \(rest.count) more hook\(rest.count == 1 ? "" : "s") with \(calls) call\(calls == 1 ? "" : "s") (--json lists every hook)")
            }
            if summary.filteredOut > 0 {
                print("\(summary.filteredOut) call\(summary.filteredOut == 1 ? "" : "s") did not match --filter")
            }
            print("\(summary.totalHits) call\(summary.totalHits == 1 ? "" : "s") in \(format1(seconds)) s; ended by \(describe(summary.end, countOption: "--count")); breakpoints removed\(summary.codeRestored ? ", code verified" : ", CODE NOT VERIFIED")")
        }
        fflush(nil)
    }
}

/// `12.3 µs`, `4.56 ms`, `1.2 s`.
func formatDuration(_ nanoseconds: UInt64) -> String {
    let value = Double(nanoseconds)
    if value < 1_000 { return "\(nanoseconds) ns" }
    if value < 1_000_000 { return "\(format1(value / 1_000)) µs" }
    if value < 1_000_000_000 { return "\(format1(value / 1_000_000)) ms" }
    return "\(format1(value / 1_000_000_000)) s"
}

/// One decimal place.
func format1(_ value: Double) -> String {
    let scaled = (value * 10).rounded() / 10
    return scaled == scaled.rounded() ? String(Int64(scaled)) + ".0" : String(scaled)
}

/// `HH:MM:SS.uuuuuu` local time.
func clock(_ wallNanoseconds: UInt64) -> String {
    var seconds = time_t(wallNanoseconds / 1_000_000_000)
    var parts = tm()
    localtime_r(&seconds, &parts)
    let micros = (wallNanoseconds / 1_000) % 1_000_000
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    let us = String(micros)
    return "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(String(repeating: "0", count: 6 - us.count))\(us)"
}

