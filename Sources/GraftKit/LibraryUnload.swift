import GraftCore
import GraftELF
import GraftPtrace
import Glibc

/// What `unloadLibraries` did to one library graft loaded.
public struct UnloadResult: Sendable {
    public enum Outcome: String, Sendable {
        case unloaded
        /// Still in use (a patch jumps into it, a thread runs in it or will return into it), or the
        /// loader kept it mapped: left loaded, with why.
        case kept
        /// Gone already (someone unloaded it): recorded as unloaded.
        case gone
        case failed
    }
    public let record: LibraryRecord
    public let outcome: Outcome
    public let message: String?
}

extension Graft {
    // MARK: - Unload

    /// Unloads the libraries graft loaded into this process instance (only those: a library the
    /// program loaded itself is never touched): `dlclose` on a loader thread for the ones the
    /// target's loader loaded, `munmap` for the ones graft mapped. A library stays when an applied
    /// patch jumps into it, or a thread's pc or a word of its stack points into it.
    public func unloadLibraries(pid: Int32) throws -> [UnloadResult] {
        try ProcFS.preflightTarget(pid)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            let loaded = (contents.libraries ?? []).indices.filter { contents.libraries![$0].state == .loaded }
            guard !loaded.isEmpty else { return [] }
            var results: [UnloadResult] = []
            // A trampoline kept at a revert may hold a thread on its way into a library (its island
            // jumps there): free what can be freed first; a library with one still kept stays.
            if contents.patches.contains(where: { $0.trampolineState == "kept" }) {
                _ = try releaseTrampolines(pid: pid, contents: &contents)
            }
            let maps = try ProcMaps.read(pid: pid)
            for position in loaded {
                var record = contents.libraries![position]
                // The journal is obeyed only where memory agrees: the recorded file still mapped at its base.
                guard maps.contains(where: { $0.start == record.baseValue && ($0.path == record.mappedAs || $0.path.hasSuffix(record.mappedAs)) }) else {
                    record.state = .unloaded
                    record.unloadedAt = isoTimestamp()
                    contents.libraries![position] = record
                    results.append(UnloadResult(record: record, outcome: .gone, message: "no longer mapped at \(record.base); recorded as unloaded"))
                    continue
                }
                if let patch = contents.patches.first(where: { $0.state != .reverted && ($0.library == record.path || $0.targetAddress.flatMap(hexValue).map(record.range.contains) == true) }) {
                    results.append(UnloadResult(record: record, outcome: .kept, message: "patch \(patch.id) jumps into it; `graft unpatch -p \(pid) \(patch.id)` first"))
                    continue
                }
                if let patch = contents.patches.first(where: { $0.library == record.path && $0.trampolineState == "kept" }) {
                    results.append(UnloadResult(record: record, outcome: .kept, message: "patch \(patch.id)'s trampoline (\(patch.trampoline ?? "?")), which leads into it, is still in use; try again"))
                    continue
                }
                let result = try unload(record, pid: pid)
                if result.outcome == .unloaded {
                    record.state = .unloaded
                    record.unloadedAt = isoTimestamp()
                    contents.libraries![position] = record
                }
                results.append(UnloadResult(record: record, outcome: result.outcome, message: result.message))
            }
            try journal.save(contents, for: instance)
            return results
        }
    }

    /// Unloads one library after checking no thread uses it.
    private func unload(_ record: LibraryRecord, pid: Int32) throws -> (outcome: UnloadResult.Outcome, message: String?) {
        let index = try SymbolIndex(pid: pid)
        if record.loader == "graft" {
            let (reason, _, _) = try withStoppedProcess(pid) { tracee -> (String?, Int) in
                if let reason = try TrampolineSite.user(of: record.range, tracee: tracee) { return (reason, 0) }
                try tracee.remoteMunmap(address: record.baseValue, length: record.endValue - record.baseValue)
                return (nil, 0)
            }
            return reason.map { (.kept, "\($0); left mapped") } ?? (.unloaded, nil)
        }
        guard let functions = LoaderFunctions.find(in: index), let handle = record.handle.flatMap(hexValue) else {
            return (.failed, "the process's dynamic loader (dlclose) cannot be found")
        }
        // Every thread stopped for the check; then one borrowed thread starts the dlclose thread.
        // A thread caught inside it (preempted in the replacement) usually leaves within
        // milliseconds: look again a few times, the process running in between, before giving up.
        var user: String?
        for attempt in 0..<8 {
            if attempt > 0 { usleep(UInt32(2_000 * attempt)) }
            (user, _, _) = try withStoppedProcess(pid) { tracee -> (String?, Int) in
                (try TrampolineSite.user(of: record.range, tracee: tracee), 0)
            }
            if user == nil { break }
        }
        if let user { return (.kept, "\(user); left loaded") }
        let (started, _, _) = try withHijackedThread(pid, index: index) { tracee, thread in
            try LoaderThread.start(functions.close, name: functions.closeName, argument0: handle, argument1: 0,
                                   functions: functions, tracee: tracee, thread: thread)
        }
        let finished = try LoaderThread.wait(started, pid: pid, timeout: 10)
        if LoaderThread.waitForThreadEnd(finished, pid: pid) {
            _ = try? withHijackedThread(pid, index: index) { tracee, thread in
                try LoaderThread.free(started, tracee: tracee, thread: thread)
            }
        }
        if finished.result != 0 {
            return (.failed, "\(functions.closeName) failed: \(finished.message ?? "no message")")
        }
        let still = try ProcMaps.read(pid: pid).contains { $0.start == record.baseValue && ($0.path == record.mappedAs || $0.path.hasSuffix(record.mappedAs)) }
        if still {
            if functions.flavor == .musl {
                return (.kept, "musl never unloads a library (its dlclose does nothing): it stays mapped, unused")
            }
            return (.kept, "\(functions.closeName) returned 0, but it stays mapped: something else holds a reference to it (the program's own dlopen of it, RTLD_NODELETE, or a library that depends on it)")
        }
        return (.unloaded, nil)
    }
}
