import GraftCore
import GraftKit
import GraftPtrace
import Glibc

/// The live status line of `hook` and `trace`: on stderr, only when it is a terminal, redrawn at
/// most 10 times a second, erased before any other output.
final class StatusLine {
    let enabled: Bool

    /// `sharedTerminal`: a launched command writes to the same terminal, and a status line redrawn
    /// between its lines would be left glued to them: then there is none.
    init(sharedTerminal: Bool = false) {
        enabled = isatty(2) != 0 && !sharedTerminal
    }

    private var last: UInt64 = 0
    private(set) var shown = false
    /// stdout's lines, written out by `flush` and `clear` (and before anything else writes stdout).
    let out = LineBuffer()

    /// Writes the buffered lines and flushes stdout, then redraws the line (the text is built only
    /// when it will be shown).
    func flush(_ text: () -> String) {
        out.writeOut()
        fflush(nil)
        guard enabled else { return }
        let now = monotonicNanoseconds()
        guard now - last > 100_000_000 else { return }
        last = now
        writeRawStandardError("\r\u{1b}[K" + text())
        shown = true
    }

    /// Before a line goes into `out`: erase the status line (which writes out the lines before it).
    /// Past half the buffer, `out` is written here, between lines: a line up to that size never
    /// reaches stdout in two writes (a launched command may share it).
    @inline(__always)
    func beginLine() {
        if shown { clear() }
        if out.count > out.capacity / 2 { out.writeOut() }
    }

    /// A line on stdout (buffered until the next `flush`), after erasing the status line.
    func emit(_ line: String) {
        beginLine()
        out.append(line)
        out.append(UInt8(ascii: "\n"))
    }

    /// Something the user should know: a JSON `notice` event, or `graft: text` on stderr.
    func notice(_ text: String, json: Bool) {
        if json {
            emit(JSON.object([("event", "notice"), ("message", .string(text))]).serialized)
        } else {
            clear()
            writeStandardError("graft: \(text)\n")
        }
    }

    /// Writes the buffered lines, and erases the status line if it is shown. Call it before
    /// anything else writes stdout or stderr (summaries, errors).
    func clear() {
        out.writeOut()
        guard shown else { return }
        fflush(nil)
        writeRawStandardError("\r\u{1b}[K")
        shown = false
    }
}

/// How a hook or trace session ends, said while it runs: on a terminal the status line says it
/// (`graft: 12 calls so far; ends after 100 calls, on Ctrl-C or SIGTERM, or when process 4242
/// exits`), and a session with no --count/--duration whose stderr is not a terminal says it once
/// when it is armed (a script or a log then shows why it waits).
struct SessionEnding {
    let count: Int?
    let duration: Double?
    /// nil in launch mode: the command's exit ends it.
    let pid: Int32?
    /// What `count` counts: "call" (hooks) or "step" (trace --steps).
    let unit: String

    var isUnbounded: Bool { count == nil && duration == nil }

    /// `ends after 100 calls, after 5 s, on Ctrl-C or SIGTERM, or when process 4242 exits`.
    var text: String {
        var parts: [String] = []
        if let count { parts.append("after \(count) \(count == 1 ? unit : plural(unit))") }
        if let duration { parts.append("after \(format1(duration)) s") }
        parts.append("on Ctrl-C or SIGTERM")
        let exit = pid.map { "when process \($0) exits" } ?? "when the command exits"
        return "ends " + parts.joined(separator: ", ") + ", or " + exit
    }

    func statusLine(_ sofar: Int) -> String {
        let counted = count.map { "\(sofar) of \($0) \(unit)s" } ?? "\(sofar) \(unit)\(sofar == 1 ? "" : "s") so far"
        return "graft: \(counted); \(text)"
    }

    /// Once, when armed: on a stderr that is not a terminal (where no status line is drawn), for a
    /// session nothing but a signal or the target's exit ends.
    func announceIfUnbounded(_ status: StatusLine) {
        guard isUnbounded, !status.enabled, isatty(2) == 0 else { return }
        status.clear()
        writeStandardError("graft: armed; the session \(text)\n")
    }
}

/// Why a session ended, as the summaries say it (`countOption`: the option behind `.count`).
func describe(_ end: HookSessionEnd, countOption: String) -> String {
    switch end {
    case .signal(let signal): return signalName(signal)
    case .count: return countOption
    case .duration: return "--duration"
    case .requested: return "request"
    case .targetExited(let status): return "target exit (\(status.exitDescription))"
    case .targetExec: return "target exec"
    case .threadExited(let tid): return "thread \(tid) exit"
    case .callsTraced: return "--calls"
    }
}

/// Writes to stderr unbuffered (no newline added).
func writeRawStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress!, $0.count) }
}

/// `calls`, `writes`, `accesses`.
func plural(_ unit: String) -> String { unit.hasSuffix("s") ? unit + "es" : unit + "s" }
