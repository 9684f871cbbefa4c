import GraftCore
import GraftKit
import Glibc

/// Writing to stdout/stderr. Text for people, one JSON object per line for scripts.
enum Output {
    static func line(_ text: String) {
        print(text)
    }

    static func json(_ value: JSON) {
        print(value.serialized)
    }

    /// `graft: error: …` on stderr: one line.
    static func error(_ message: String) {
        let oneLine = message.split(separator: "\n").joined(separator: "; ")
        writeStandardError("graft: error: \(oneLine)\n")
    }

    static func warning(_ message: String) {
        writeStandardError("graft: warning: \(message)\n")
    }

    /// Left-aligned columns.
    static func table(_ rows: [[String]]) -> [String] {
        guard let first = rows.first else { return [] }
        var widths = Array(repeating: 0, count: first.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count)
            }.joined(separator: "  ")
        }
    }
}

/// Runs `body` with SIGINT/SIGTERM/SIGHUP/SIGQUIT held back; afterwards a held signal ends graft
/// with the usual status (128 + signal) once the target is consistent. A signal that came before
/// anything was written cancels the operation there (`Graft.cancellation`: waiting for the journal
/// lock, planning): then `body` throws `.interrupted` and nothing was done. A held SIGTSTP
/// suspends graft once the target runs again.
func withTerminationDeferred<T>(_ body: () throws -> T) throws -> T {
    raisePriorityOfWritingCommand()
    TerminationSignals.deferAll()
    // Restored before `pending` is read: a signal that comes after the restore acts at once.
    var restored = false
    func restore() {
        if restored { return }
        restored = true
        TerminationSignals.restoreDefaults()
    }
    defer {
        restore()
        TerminationSignals.suspendIfHeld()
    }
    do {
        let value = try body()
        restore()
        if let signal = TerminationSignals.pending {
            writeStandardError("graft: interrupted by \(signalName(signal)); the operation was completed first\n")
            exit(128 + signal)
        }
        return value
    } catch GraftError.interrupted(let signal) {
        Output.error(GraftError.interrupted(signal: signal).description)
        exit(128 + signal)
    } catch {
        restore()
        if let signal = TerminationSignals.pending {
            Output.error("\(error)")
            exit(128 + signal)
        }
        throw error
    }
}

extension ProcessOptions {
    /// The Graft for a command that writes: it gives up before the first write when a deferred
    /// termination signal has come (see `withTerminationDeferred`).
    var cancellableGraft: Graft {
        var graft = self.graft
        graft.cancellation = { TerminationSignals.pending }
        return graft
    }
}

/// stderr without touching the C global `stderr` (Swift 6 rejects it as shared mutable state).
func writeStandardError(_ text: String) {
    fflush(nil)  // keep stdout and stderr in order on a shared terminal
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { break }
        offset += n
    }
}

/// A command that writes into a process (patch, inject, unpatch) lasts milliseconds, but behind a
/// target whose threads keep every CPU busy a normal-priority graft waits for each time slice: the
/// command took 2× longer under 8 spinning threads on 2 CPUs (docs/benchmarks.md). Where graft may
/// (root, CAP_SYS_NICE) it runs at nice -10 for its short life — its own scheduling only, a CFS
/// weight, not a real-time class; threads it starts inherit it. GRAFT_NO_RT=1 keeps nice 0.
func raisePriorityOfWritingCommand() {
    guard getenv("GRAFT_NO_RT") == nil, getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) > -10 else { return }
    _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -10)
}
