import CGraftShim

/// SIGINT, SIGTERM and SIGHUP held back while graft writes code: a multi-word write cut in half would
/// leave the target with a torn instruction. The CLI installs this for every command that writes,
/// then exits with the held signal's status once the target is consistent again.
public enum TerminationSignals {
    public static func deferAll() { _ = graft_defer_termination_signals() }
    /// The first signal received while deferred, or nil.
    public static var pending: Int32? {
        let sig = graft_deferred_signal()
        return sig == 0 ? nil : sig
    }
    public static func restoreDefaults() { graft_restore_termination_signals() }
}
