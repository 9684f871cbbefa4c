import GraftCore
import GraftPtrace

/// One process's part in a patch over several processes (`Graft.patch(pids:…)`).
public struct ProcessPatchResult: Sendable {
    public enum Outcome: String, Sendable {
        /// Patched (or, on a dry run, every check passed).
        case patched
        /// This process refused the patch (`error` says why).
        case refused
        /// All or nothing: patched, then reverted because another process refused.
        case rolledBack = "rolled-back"
        /// All or nothing: not touched because another process refused.
        case notPatched = "not-patched"
    }
    public let pid: Int32
    public var outcome: Outcome
    public var patch: PatchOutcome?
    public var error: GraftError?
    /// The rollback's failure, when a rolled-back patch could not be reverted (it stays applied).
    public var rollbackError: GraftError?
}

extension Graft {
    /// The same patch in every process of `pids` (`-p 8153,8293`, `-n nginx`). By default all or
    /// nothing: each process's checks run first (the plan, no write); a process that refuses means
    /// none is patched, and one that refuses at its write gets the others' patches reverted.
    /// `each` goes on past a refusal and patches every process that accepts.
    public func patch(pids: [Int32], location: String, action: PatchAction, dryRun: Bool = false, midFunction: Bool = false,
                      library: String? = nil, each: Bool = false) -> [ProcessPatchResult] {
        var results = pids.map { ProcessPatchResult(pid: $0, outcome: .notPatched) }
        func failure(_ error: any Error) -> GraftError { error as? GraftError ?? GraftError.usage("\(error)") }
        // Checks first, nothing written (a --library patch loads the library at its write: its
        // checks run there, and a refusal then rolls the others back).
        if !each && !dryRun && library == nil {
            var refused = false
            for index in results.indices {
                do {
                    _ = try preparePatch(pid: pids[index], location: location, action: action, midFunction: midFunction)
                } catch {
                    results[index].outcome = .refused
                    results[index].error = failure(error)
                    refused = true
                }
            }
            if refused { return results }
        }
        for index in results.indices {
            do {
                let outcome = try patch(pid: pids[index], location: location, action: action, dryRun: dryRun, midFunction: midFunction, library: library)
                results[index].outcome = .patched
                results[index].patch = outcome
            } catch {
                results[index].outcome = .refused
                results[index].error = failure(error)
                if each || dryRun { continue }
                for done in results.indices where results[done].outcome == .patched {
                    guard let id = results[done].patch?.record?.id else { continue }
                    do {
                        let reverted = try unpatch(pid: pids[done], ids: [id])
                        if let bad = reverted.first(where: { $0.outcome == .changed || $0.outcome == .failed }) {
                            results[done].rollbackError = GraftError.usage(bad.message ?? bad.outcome.rawValue)
                        } else {
                            results[done].outcome = .rolledBack
                        }
                    } catch {
                        results[done].rollbackError = failure(error)
                    }
                }
                return results
            }
        }
        return results
    }
}
