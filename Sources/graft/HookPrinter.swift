import GraftCore
import GraftKit
import Glibc

/// The one call line waiting for its return (`HookPrinter.combinesReturns`), and whose it is.
final class HeldCall {
    private(set) var hit: HookHit?
    private(set) var since: UInt64 = 0
    private(set) weak var printer: HookPrinter?

    func hold(_ hit: HookHit, by printer: HookPrinter) {
        self.hit = hit
        self.printer = printer
        since = monotonicNanoseconds()
    }

    func clear() {
        hit = nil
        printer = nil
    }

    /// Prints the waiting call as it is, by its printer (its return will have a line of its own).
    func release() {
        guard let hit, let printer else { return }
        clear()
        printer.printHeld(hit)
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

    init(json: Bool, quiet: Bool, argumentCount: Int, launched: Bool = false, status: StatusLine? = nil, pid: Int32? = nil,
         hold: HeldCall = HeldCall()) {
        self.hold = hold
        self.status = status ?? StatusLine(sharedTerminal: launched)
        self.pid = pid
        self.json = json
        self.quiet = quiet
        self.argumentCount = argumentCount
    }

    /// How the session ends, for the status line and the first line on a non-terminal stderr.
    var ending = SessionEnding(count: nil, duration: nil, pid: nil, unit: "call")

    /// Text mode with `--returns`: a call's line waits for its return to become one line,
    /// `price(item="apple", qty=3) = 30 in 3.1 µs`. Only the latest call waits: any other line
    /// (another thread's call, a nested call, a notice) first prints it as it is, and its return
    /// comes later on a line of its own (`price returned 30 in …`), as strace does with
    /// `<unfinished …>`; so does a call still running after `holdWindow`.
    var combinesReturns = false
    static let holdWindow: UInt64 = 50_000_000
    /// The call line waiting, shared by the printers of one output (a fleet's processes) so that
    /// any line of any of them first prints it.
    let hold: HeldCall

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
            if json {
                jsonLine(hit)
            } else {
                releaseHeld()
                if combinesReturns && hit.call != 0 {
                    hold.hold(hit, by: self)
                } else {
                    textLine(hit)
                }
            }
        case .returned(let value):
            if quiet { break }
            if json {
                jsonLine(value)
            } else if hold.printer === self, let call = hold.hit, call.call == value.call, value.call != 0 {
                hold.clear()
                textLine(call, returned: value)
            } else {
                releaseHeld()
                textLine(value)
            }
        case .notice(let text):
            releaseHeld()
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

    /// Prints the call waiting for its return as it is (its return will have a line of its own).
    private func releaseHeld() {
        hold.release()
    }

    /// The held call's own line (`HeldCall.release`).
    fileprivate func printHeld(_ call: HookHit) {
        textLine(call)
    }

    /// A call line; with `returned`, the call and its return on one line:
    /// `HH:MM:SS.uuuuuu [TID] LOCATION(ARGS) = VALUE[ (made to return 0xR)] in DURATION`.
    private func textLine(_ hit: HookHit, returned: HookReturn? = nil) {
        let out = openTextLine(hit.wallTime, tid: hit.tid, bytes(hook: hit.hook, location: hit.location).textHit)
        if argumentCount == 0 {
            out.append(ellipsis)
        } else if let typed = hit.typedArguments {
            for (i, argument) in typed.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")); out.append(UInt8(ascii: " ")) }
                // An output buffer as the call left it (`read`'s bytes), once it has returned.
                appendNamed(returned.flatMap { value in value.outputs.first { $0.name == argument.name } } ?? argument, to: out)
            }
        } else {
            for (i, argument) in hit.arguments.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")); out.append(UInt8(ascii: " ")) }
                out.appendHex(argument)
            }
        }
        out.append(UInt8(ascii: ")"))
        if let returned {
            out.append(equals)
            appendReturnValue(returned, to: out)
        }
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
            // Raw registers: {"name":"arg0","type":null,"value":"0x…","register":"rdi","raw":"0x…"}.
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
            out.append(",\"backtrace\":" + JSON.array(hit.backtrace.map(\.json)).serialized)
        }
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
    }

    private func textLine(_ value: HookReturn) {
        let out = openTextLine(value.wallTime, tid: value.tid, bytes(hook: value.hook, location: value.location).textReturn)
        appendReturnValue(value, to: out, outputs: true)
        out.append(UInt8(ascii: "\n"))
    }

    /// `VALUE[ (made to return 0xR)][ with NAME=BYTES, …] in DURATION` (the output buffers when the
    /// call's line was printed without them).
    private func appendReturnValue(_ value: HookReturn, to out: LineBuffer, outputs: Bool = false) {
        if let text = value.resultText { out.append(text) } else { out.appendHex(value.value) }
        if value.returnedValue != value.value {
            out.append(madeToReturn)
            out.appendHex(value.returnedValue)
            out.append(UInt8(ascii: ")"))
        }
        if outputs {
            for (i, output) in value.outputs.enumerated() {
                out.append(i == 0 ? " with " : ", ")
                appendNamed(output, to: out)
            }
        }
        out.append(durationIn)
        out.append(formatDuration(value.durationNanoseconds))
    }

    /// `NAME=VALUE`, as an argument shows in a text line.
    private func appendNamed(_ argument: TypedArgument, to out: LineBuffer) {
        out.append(argument.name)
        out.append(UInt8(ascii: "="))
        out.append(argument.value.text)
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
        out.append(value.resultJSONFields)
        if !value.outputs.isEmpty {
            out.append(",\"outputs\":" + JSON.array(value.outputs.map(\.json)).serialized)
        }
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
    }

    private let ellipsis = Array("…".utf8)
    private let equals = Array(" = ".utf8)
    private let addressKey = Array(",\"address\":\"".utf8)
    private let timeKey = Array("\",\"time_ns\":".utf8)
    private let argsKey = Array(",\"args\":[".utf8)
    private let madeToReturn = Array(" (made to return ".utf8)
    private let durationIn = Array(" in ".utf8)
    private let valueKey = Array(",\"value\":\"".utf8)
    private let durationKey = Array("\",\"duration_ns\":".utf8)
    private let returnedKey = Array(",\"returned\":\"".utf8)
    private let rawKey = Array("\",\"raw\":\"".utf8)

    /// `{"name":"argN","type":null,"value":"` for each argument register.
    private struct RawPrefix { let prefix: [UInt8] }
    private static func rawPrefixes(_ names: [String]) -> [RawPrefix] {
        names.enumerated().map { RawPrefix(prefix: Array("{\"name\":\"arg\($0.offset)\",\"type\":null,\"register\":\"\($0.element)\",\"value\":\"".utf8)) }
    }
    private let rawRegisters = HookPrinter.rawPrefixes(["rdi", "rsi", "rdx", "rcx", "r8", "r9"])
    private let rawGoRegisters = HookPrinter.rawPrefixes(["rax", "rbx", "rcx", "rdi", "rsi", "r8", "r9", "r10", "r11"])
    private func stackArgumentPrefix(_ slot: Int, _ index: Int) -> [UInt8] {
        Array("{\"name\":\"arg\(index)\",\"type\":null,\"register\":\"rsp+\(8 + slot * 8)\",\"value\":\"".utf8)
    }


    /// Called before graft blocks: push the lines out, refresh the status line.
    func flush() {
        if hold.hit != nil, monotonicNanoseconds() &- hold.since >= Self.holdWindow { releaseHeld() }
        status.flush { ending.statusLine(hitsSoFar()) }
    }

    /// A call line waits for its return: graft must flush again soon, even if the target stays quiet.
    var holdsOutput: Bool { hold.hit != nil }

    func clearStatus() {
        releaseHeld()
        status.clear()
    }

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

