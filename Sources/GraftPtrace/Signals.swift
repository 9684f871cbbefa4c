import CGraftShim
import Glibc

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT held back while graft holds the target: a multi-word write cut
/// in half would leave the target with a torn instruction, a hook session killed mid-way its int3s.
/// The CLI installs this for every command that stops or writes, then exits with the held signal's
/// status once the target is consistent again. SIGTSTP (Ctrl-Z) is held apart (`holdStop`): a
/// suspended graft would keep the target stopped, so `patch`/`unpatch` suspend only once done
/// (`suspendIfHeld`), and a hook or trace session on `-p PID` (`announceStop`) says on stderr why
/// it does not suspend. A launch-mode session does not hold it: its command shares graft's terminal
/// and process group, so Ctrl-Z stops both and `fg` resumes both. SIGTTOU/SIGTTIN/SIGPIPE are
/// ignored meanwhile (a background graft writing to its terminal goes on; a closed stdout pipe is
/// an EPIPE, not a graft killed mid-way). A signal ignored when graft started stays ignored —
/// except in a hook or trace session (`session`), which ends on SIGINT, SIGTERM and SIGQUIT
/// whatever it inherited: a shell without job control starts `graft hook … &` with SIGINT and
/// SIGQUIT ignored, and scripts end tracing tools with `kill -INT` (perf, bpftrace and strace all
/// end on it). SIGHUP ignored by `nohup` stays ignored, as asked. `restoreDefaults` puts back the
/// dispositions graft started with.
public enum TerminationSignals {
    public static func deferAll(holdStop: Bool = true, announceStop: Bool = false, session: Bool = false) {
        _ = graft_defer_termination_signals(holdStop ? 1 : 0, announceStop ? 1 : 0, session ? 1 : 0)
    }
    /// The first termination signal received while deferred, or nil.
    public static var pending: Int32? {
        let sig = graft_deferred_signal()
        return sig == 0 ? nil : sig
    }
    public static func restoreDefaults() { graft_restore_termination_signals() }
    /// What ends a hook or trace session from outside: a held termination signal, or stdout's
    /// reader gone (`| head`), reported as SIGPIPE, the way a pipeline's writer ends.
    public static var sessionEnd: Int32? {
        pending ?? (graft_stdout_closed() != 0 ? SIGPIPE : nil)
    }
    /// After `restoreDefaults`: a SIGTSTP held meanwhile suspends graft now, as the user asked.
    public static func suspendIfHeld() {
        if graft_deferred_stop_signal() != 0 { raise(SIGTSTP) }
    }
}
