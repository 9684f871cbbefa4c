import Glibc
import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace

/// A journal entry checked against the process's memory now.
public struct PatchStatus: Sendable {
    public enum State: String, Sendable {
        /// Memory holds graft's bytes.
        case applied
        /// The journal says graft reverted it (memory then held the original bytes; what it holds
        /// now is in `memoryBytes`, not judged: a later patch may own those bytes).
        case reverted
        /// Memory holds the original bytes although the journal says applied: someone restored it.
        case notPresent = "not-present"
        /// Memory holds neither: someone else changed the code.
        case changed
    }
    public let record: PatchRecord
    public let state: State
    public let memoryBytes: [UInt8]
}

/// What `unpatch` did to one patch.
public struct UnpatchResult: Sendable {
    public enum Outcome: String, Sendable {
        case reverted
        /// Already reverted: nothing to do.
        case alreadyReverted = "already-reverted"
        /// Memory no longer holds graft's bytes: left untouched.
        case changed
        case failed
        /// Dropped from the journal by `forget`; memory untouched.
        case forgotten
    }
    public let record: PatchRecord
    public let outcome: Outcome
    public let message: String?
    public let steppedThreads: [Int32]
    /// How long the process was stopped for this unpatch (0 when nothing needed a write: graft then
    /// does not stop it at all). The same window for every patch reverted by one call.
    public var stopWindowNanoseconds: UInt64 = 0
}

/// graft's operations on a live process, as a Swift program calls them. The CLI is a thin layer on top.
public struct Graft: Sendable {
    public var journal: Journal
    /// Tests only (`@testable`): runs on the tracer thread once every thread is stopped, before the
    /// operation's first read or write, e.g. to kill the target in the middle of the stop window.
    var insideStopWindow: (@Sendable (Int32) -> Void)? = nil
    /// Asked before anything is written (while waiting for the journal lock, and just before the
    /// target is stopped): a signal number there gives the operation up with `.interrupted`,
    /// nothing written. Once the target is stopped the operation is finished first. The CLI
    /// answers with the termination signal it holds back (Ctrl-C).
    public var cancellation: (@Sendable () -> Int32?)? = nil

    public init(journal: Journal = Journal()) {
        self.journal = journal
    }

    // MARK: - Symbols

    /// Functions mapped in the process whose name matches the glob `pattern` (all when nil),
    /// optionally restricted to one module: `MODULE:GLOB` (`libc:get*`, `c_loop:`).
    public func symbols(pid: Int32, matching pattern: String?) throws -> [ResolvedLocation] {
        try ProcFS.preflightTarget(pid, allowSelf: true)
        return try SymbolIndex(pid: pid).functions(matching: pattern)
    }

    // MARK: - Patch

    /// Computes and checks a patch without stopping the target or writing anything.
    public func preparePatch(pid: Int32, location: String, action: PatchAction, midFunction: Bool = false) throws -> PatchPlan {
        let instance = try ProcessInstance.current(pid)
        return try preparePatch(instance: instance, contents: journal.load(instance), location: location, action: action, midFunction: midFunction)
    }

    private func preparePatch(instance: ProcessInstance, contents: JournalContents, location: String, action: PatchAction,
                              midFunction: Bool) throws -> PatchPlan {
        try ProcFS.preflightTarget(instance.pid)
        let index = try SymbolIndex(pid: instance.pid)
        var planner = PatchPlanner(
            instance: instance, index: index, journal: contents, disassembler: try Disassembler(.x86_64),
            readMemory: { try ProcessMemory.read(pid: instance.pid, at: $0, count: $1) })
        planner.allowMidFunction = midFunction
        planner.journalDirectory = journal.directory
        return try planner.plan(location: location, action: action)
    }

    /// Prepares, checks and applies a patch with every thread stopped, and records it in the journal.
    /// With `dryRun` it stops after the checks and writes nothing. `midFunction` accepts a LOCATION
    /// inside the function after code that moved the stack pointer (refused otherwise: the stub's
    /// or the target's `ret` would not find the caller's return address).
    public func patch(pid: Int32, location: String, action: PatchAction, dryRun: Bool = false, midFunction: Bool = false) throws -> PatchOutcome {
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            let plan = try preparePatch(instance: instance, contents: contents, location: location, action: action, midFunction: midFunction)
            if dryRun {
                return PatchOutcome(plan: plan, record: nil, dryRun: true, steppedThreads: [], threadCount: 0, stopWindowNanoseconds: 0)
            }
            if let signal = cancellation?() { throw GraftError.interrupted(signal: signal) }
            // Record the intent first: if graft dies mid-way, `list` still knows where to look.
            var record = PatchRecord(
                id: contents.nextID, address: hex(plan.address), function: plan.location.description,
                module: plan.modulePath, buildID: plan.buildID,
                kind: { if case .jump = plan.action { return "jump" } else { return "return" } }(),
                target: plan.target?.description, targetAddress: plan.target.map { hex($0.address) },
                returnValue: { if case .returnValue(let v) = plan.action { return v } else { return nil } }(),
                originalBytes: hexString(plan.originalBytes), newBytes: hexString(plan.newBytes),
                state: .applying, appliedAt: isoTimestamp(), revertedAt: nil)
            contents.nextID += 1
            contents.patches.append(record)
            try journal.save(contents, for: instance)

            let result: (stepped: [Int32], threads: Int, window: UInt64)
            do {
                result = try withStoppedProcess(pid) { tracee in
                    let stepped = try StoppedCode.moveThreadsOut(of: plan.range, tracee: tracee)
                    try StoppedCode.checkReturnAddresses(plan.returnAddressesInside, tracee: tracee)
                    try StoppedCode.replace(at: plan.address, old: plan.originalBytes, new: plan.newBytes, tracee: tracee)
                    return (stepped, tracee.threadIDs.count)
                }
            } catch {
                contents.patches.removeLast()
                contents.nextID -= 1
                try? journal.save(contents, for: instance)
                throw error
            }
            record.state = .applied
            contents.patches[contents.patches.count - 1] = record
            do {
                try journal.save(contents, for: instance)
            } catch GraftError.journal(let path, let reason) {
                // The intent record saved before the write still names the patch (as `applying`,
                // which list and unpatch judge by memory): say the patch is in, and how to undo it.
                throw GraftError.journal(path: path, reason: "patch \(record.id) was applied, but recording that failed (\(reason)); the journal still has it as being applied: `graft list -p \(pid)` shows it, `graft unpatch -p \(pid) \(record.id)` reverts it")
            }
            return PatchOutcome(plan: plan, record: record, dryRun: false, steppedThreads: result.stepped,
                                threadCount: result.threads, stopWindowNanoseconds: result.window)
        }
    }

    // MARK: - List

    /// Every patch recorded for this process instance, checked against memory.
    public func list(pid: Int32) throws -> [PatchStatus] {
        try ProcFS.preflightTarget(pid, journalOnly: true)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            try journal.load(instance).patches.map { record in
                let memory = (try? ProcessMemory.read(pid: pid, at: record.addressValue, count: record.new.count)) ?? []
                return PatchStatus(record: record, state: Graft.state(of: record, memory: memory), memoryBytes: memory)
            }
        }
    }

    static func state(of record: PatchRecord, memory: [UInt8]) -> PatchStatus.State {
        state(new: record.new, original: record.original, recorded: record.state, memory: memory)
    }

    /// The same with the record's bytes already decoded (no work but comparisons: for stop windows).
    /// A record the journal says graft reverted stays reverted whatever memory holds now: graft
    /// wrote the original back and read it back then; bytes there since are someone else's (often a
    /// later patch, with its own record), and `unpatch` must never write them back.
    static func state(new: [UInt8], original: [UInt8], recorded: PatchRecord.State, memory: [UInt8]) -> PatchStatus.State {
        if recorded == .reverted { return .reverted }
        if memory == new { return .applied }
        if !memory.isEmpty && memory.elementsEqual(original.prefix(memory.count)) { return .notPresent }
        return .changed
    }

    // MARK: - Unpatch

    /// Reverts patches by id (all applied ones when `ids` is nil): original bytes are written back only
    /// where memory still holds graft's bytes.
    public func unpatch(pid: Int32, ids: [Int]?) throws -> [UnpatchResult] {
        try ProcFS.preflightTarget(pid)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            let selected: [Int]
            if let ids {
                for id in ids where !contents.patches.contains(where: { $0.id == id }) {
                    throw GraftError.patchNotFound(id: id, pid: pid)
                }
                selected = ids
            } else {
                selected = contents.patches.filter { $0.state != .reverted }.map(\.id)
            }
            guard !selected.isEmpty else { return [] }
            var results: [UnpatchResult] = []
            let now = isoTimestamp()  // outside the stop window
            // Inside the stop window only ptrace work: what happened to each patch is noted, and the
            // journal records (arrays of strings: copies, allocations) are updated after the process
            // runs again.
            enum Done { case already, changed([UInt8]), reverted([Int32]), failed(String) }
            let positions = selected.map { id in contents.patches.firstIndex(where: { $0.id == id })! }
            // The records keep their bytes as hex strings: decode them before stopping anything, and
            // read memory now (/proc/PID/mem, the process running): a patch whose bytes are not
            // graft's is reported without stopping the process at all.
            let targets = positions.map { position in
                let record = contents.patches[position]
                return (address: record.addressValue, new: record.new, original: record.original, range: record.range,
                        recorded: record.state)
            }
            var done: [Done] = []
            var toRevert: [Int] = []
            for (index, target) in targets.enumerated() {
                let memory: [UInt8]
                do {
                    memory = try ProcessMemory.read(pid: pid, at: target.address, count: target.new.count)
                } catch let error as GraftError {
                    if case .addressNotMapped = error { done.append(.failed(error.description)); continue }
                    throw error
                }
                switch Graft.state(new: target.new, original: target.original, recorded: target.recorded, memory: memory) {
                case .applied: done.append(.already); toRevert.append(index)  // decided in the stop window below
                case .reverted, .notPresent: done.append(.already)
                case .changed: done.append(.changed(memory))
                }
            }
            var window: UInt64 = 0
            if !toRevert.isEmpty {
                (_, _, window) = try withStoppedProcess(pid) { tracee -> (Int, Int) in
                    for index in toRevert {
                        let target = targets[index]
                        do {
                            let stepped = try StoppedCode.moveThreadsOut(of: target.range, tracee: tracee)
                            // Compare and write in one pass: memory may have changed since the read above.
                            if let found = try tracee.replaceText(at: target.address, expected: target.new, new: target.original) {
                                let state = Graft.state(new: target.new, original: target.original, recorded: target.recorded, memory: found)
                                done[index] = state == .changed ? .changed(found) : .already
                            } else {
                                done[index] = .reverted(stepped)
                            }
                        } catch let error as GraftError {
                            if let death = tracee.processDeath() { throw death }
                            done[index] = .failed(error.description)
                        }
                    }
                    return (0, 0)
                }
            }
            for (position, outcome) in zip(positions, done) {
                var record = contents.patches[position]
                switch outcome {
                case .already:
                    var message = "memory already holds the original bytes"
                    if record.state == .reverted {
                        message = "\(record.revertedAt.map { "since \($0)" } ?? "earlier"); memory left as it is"
                    } else {
                        record.state = .reverted
                        record.revertedAt = now
                        contents.patches[position] = record
                    }
                    results.append(UnpatchResult(record: record, outcome: .alreadyReverted, message: message, steppedThreads: []))
                case .changed(let memory):
                    results.append(UnpatchResult(record: record, outcome: .changed, message: "memory at \(record.address) holds \(hexBytes(memory)), not graft's \(hexBytes(record.new)): someone else changed it; left untouched", steppedThreads: []))
                case .reverted(let stepped):
                    record.state = .reverted
                    record.revertedAt = now
                    contents.patches[position] = record
                    results.append(UnpatchResult(record: record, outcome: .reverted, message: nil, steppedThreads: stepped,
                                                 stopWindowNanoseconds: window))
                case .failed(let message):
                    results.append(UnpatchResult(record: record, outcome: .failed, message: message, steppedThreads: []))
                }
            }
            try journal.save(contents, for: instance)
            return results
        }
    }

    // MARK: - Forget

    /// Drops records from the journal without touching memory: for a patch someone else changed
    /// (`unpatch` would fail on it forever) or one reverted by hand. A patch whose bytes are still
    /// graft's is refused: forgetting it would leave a jump no journal knows how to undo.
    public func forget(pid: Int32, ids: [Int]) throws -> [UnpatchResult] {
        try ProcFS.preflightTarget(pid, journalOnly: true)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            var results: [UnpatchResult] = []
            for id in ids {
                guard let record = contents.patches.first(where: { $0.id == id }) else {
                    throw GraftError.patchNotFound(id: id, pid: pid)
                }
                // Only an unmapped address counts as "no bytes"; any other read failure is an error
                // (taking it as "not graft's" would drop a jump that is still there).
                let memory: [UInt8]
                do {
                    memory = try ProcessMemory.read(pid: pid, at: record.addressValue, count: record.new.count)
                } catch GraftError.addressNotMapped {
                    memory = []
                }
                if Graft.state(of: record, memory: memory) == .applied {
                    throw GraftError.usage("patch \(id) is applied (memory at \(record.address) holds graft's bytes): revert it with `graft unpatch -p \(pid) \(id)`; graft forgets only patches it no longer owns")
                }
                results.append(UnpatchResult(record: record, outcome: .forgotten, message: "dropped from the journal; memory at \(record.address) left as it is (\(hexBytes(memory)))", steppedThreads: []))
            }
            contents.patches.removeAll { ids.contains($0.id) }
            try journal.save(contents, for: instance)
            return results
        }
    }

    // MARK: - Stopping

    /// Attaches (every thread stopped), runs `body` on the tracer thread, detaches. The whole stop
    /// window is one hop to the tracer thread. Returns body's values and the stop window.
    func withStoppedProcess<T>(_ pid: Int32, _ body: (Tracee) throws -> (T, Int)) throws -> (T, Int, UInt64) {
        let tracer = TracerThread()
        defer { tracer.shutdown() }
        return try tracer.run {
            // The stop window runs at SCHED_FIFO 1 where graft may (root, CAP_SYS_NICE): woken by
            // each waitpid, a normal tracer waits behind the target's own busy threads for the
            // next scheduler tick (~3 ms with 8 spinning threads on 2 CPUs, docs/benchmarks.md);
            // a real-time one runs at once. Only the tracer thread, only for the window: the
            // target's scheduling is untouched. GRAFT_NO_RT=1 turns it off (benchmarks compare).
            let realtime = getenv("GRAFT_NO_RT") == nil && graft_set_realtime_policy(1) == 0
            defer { if realtime { _ = graft_set_realtime_policy(0) } }
            if let signal = cancellation?() { throw GraftError.interrupted(signal: signal) }
            let tracee = try Tracee.attach(pid: pid, tracer: tracer)
            let value: (T, Int)
            do {
                insideStopWindow?(pid)
                value = try body(tracee)
            } catch {
                let death = tracee.processDeath()
                try? tracee.detach()
                throw death ?? error
            }
            try tracee.detach()
            return (value.0, value.1, tracee.stopWindowNanoseconds)
        }
    }
}
