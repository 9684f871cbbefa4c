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

/// The lazily started tracer thread a `Graft` value (and its copies) runs its stop windows on.
final class OperationTracer: @unchecked Sendable {
    private let lock = ConditionLock()
    private var made: TracerThread?
    var thread: TracerThread {
        lock.lock()
        defer { lock.unlock() }
        if let made { return made }
        let thread = TracerThread(name: "graft-window")
        made = thread
        return thread
    }
    deinit { made?.shutdown() }
}

/// A library graft loaded, checked against memory (`Graft.libraries`).
public struct LibraryStatus: Sendable {
    public let record: LibraryRecord
    /// `loaded`, `unloaded`, `gone` (memory no longer holds it), `loaded (file changed since)`.
    public let state: String
    /// Applied patches that jump into it.
    public let usedBy: [Int]
}

/// graft's operations on a live process, as a Swift program calls them. The CLI is a thin layer on top.
public struct Graft: Sendable {
    public var journal: Journal
    /// Tests only (`@testable`): runs on the tracer thread once every thread is stopped, before the
    /// operation's first read or write, e.g. to kill the target in the middle of the stop window.
    var insideStopWindow: (@Sendable (Tracee) -> Void)? = nil
    /// Tests only: runs once the thread a loader call borrows is stopped (the others run), before
    /// graft looks at it, e.g. to step it into `malloc`.
    var insideHijackWindow: (@Sendable (Tracee, Int32) -> Void)? = nil
    /// Asked before anything is written (while waiting for the journal lock, and just before the
    /// target is stopped): a signal number there gives the operation up with `.interrupted`,
    /// nothing written. Once the target is stopped the operation is finished first. The CLI
    /// answers with the termination signal it holds back (Ctrl-C).
    public var cancellation: (@Sendable () -> Int32?)? = nil

    /// A library graft maps itself (no dynamic loader) gets its initializers run (not in Go).
    public var injectInitializers = true
    /// The tracer thread of the stop windows, made on first use and kept while this Graft (or a
    /// copy) lives: starting a thread costs 2-10 ms when the target's busy threads hold the CPUs,
    /// and an inject is four windows.
    let operationTracer = OperationTracer()

    public init(journal: Journal = Journal()) {
        self.journal = journal
    }

    // MARK: - Symbols

    /// Functions mapped in the process whose name matches the glob `pattern` (all when nil),
    /// optionally restricted to one module: `MODULE:GLOB` (`libc:get*`, `c_loop:`).
    public func symbols(pid: Int32, matching pattern: String?) throws -> [ResolvedLocation] {
        try ProcFS.preflightTarget(pid, allowSelf: true)
        return try Graft.symbolIndex(pid: pid, journal: journal).functions(matching: pattern)
    }

    // MARK: - Patch

    /// Computes and checks a patch without stopping the target or writing anything.
    public func preparePatch(pid: Int32, location: String, action: PatchAction, midFunction: Bool = false) throws -> PatchPlan {
        let instance = try ProcessInstance.current(pid)
        return try preparePatch(instance: instance, contents: journal.load(instance), location: location, action: action, midFunction: midFunction)
    }

    /// `dryRun`: no code runs in the process, not even an IFUNC's resolver (an IFUNC no module has
    /// bound yet is then refused, saying so).
    private func preparePatch(instance: ProcessInstance, contents: JournalContents, location: String, action: PatchAction,
                              midFunction: Bool, dryRun: Bool = false) throws -> PatchPlan {
        try ProcFS.preflightTarget(instance.pid)
        let index = try symbolIndex(pid: instance.pid, contents: contents)
        var planner = PatchPlanner(
            instance: instance, index: index, journal: contents, disassembler: try Disassembler(.x86_64),
            readMemory: { try ProcessMemory.read(pid: instance.pid, at: $0, count: $1) })
        planner.allowMidFunction = midFunction
        planner.callResolver = dryRun
            ? { _, _, _ in throw GraftError.usage("--dry-run runs no code in the process (without it, graft calls the resolver to learn the implementation)") }
            : callIFUNCResolver(pid: instance.pid)
        planner.journalDirectory = journal.directory
        return try planner.plan(location: location, action: action)
    }

    /// Prepares, checks and applies a patch with every thread stopped, and records it in the journal.
    /// With `dryRun` it stops after the checks and writes nothing. `midFunction` accepts a LOCATION
    /// inside the function after code that moved the stack pointer (refused otherwise: the stub's
    /// or the target's `ret` would not find the caller's return address).
    ///
    /// `library` (with a `.jump`): the library is loaded first unless this process instance has it
    /// from graft already (`inject`), and a `--to` name without a module means its symbol. A jump
    /// to a function whose library defines `graft_original_<function>` gets a trampoline.
    public func patch(pid: Int32, location: String, action: PatchAction, dryRun: Bool = false, midFunction: Bool = false,
                      library: String? = nil) throws -> PatchOutcome {
        try ProcFS.preflightTarget(pid)  // the permission answer before any journal's
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            var action = action
            var libraryPath: String?
            var libraryRecord: LibraryRecord?
            // The load's pages, freed in the next borrowed-thread window (the trampoline's), or here.
            var pendingCleanup: LoaderCleanup?
            // One thread's stops for the load and the trampoline's page (the others ran on).
            var borrowed: UInt64 = 0
            defer { runCleanup(pendingCleanup, pid: pid) }
            if let library {
                guard case .jump(let to) = action else { throw GraftError.usage("--library goes with --to NAME (a function of the library)") }
                let loaded = try libraryForPatch(library, instance: instance, contents: &contents, dryRun: dryRun)
                pendingCleanup = loaded.cleanup
                borrowed += loaded.borrowed
                libraryPath = loaded.record.path
                libraryRecord = loaded.record
                action = .jump(to: Graft.name(to, in: loaded.record))
            }
            var plan = try preparePatch(instance: instance, contents: contents, location: location, action: action, midFunction: midFunction, dryRun: dryRun)
            plan.library = libraryPath
            plan.libraryRecord = libraryRecord
            if dryRun {
                return PatchOutcome(plan: plan, record: nil, dryRun: true, steppedThreads: [], threadCount: 0, stopWindowNanoseconds: 0)
            }
            // A trampoline: its page near the function first (one borrowed thread, the rest run), then
            // the jump and the trampoline aimed at the page (`onTrampolinePage`), so that every byte
            // is known before the intent record and the stop window.
            if let trampoline = plan.trampoline {
                if let signal = cancellation?() { throw GraftError.interrupted(signal: signal) }
                let index = try SymbolIndex(pid: pid)
                let cleanup = pendingCleanup
                pendingCleanup = nil
                let (page, pageWindow, _) = try withHijackedThread(pid, index: index) { tracee, thread in
                    cleanup?.run(tracee: tracee, thread: thread)
                    return try TrampolineSite.mapPage(near: trampoline.near, function: plan.function, tracee: tracee, thread: thread)
                }
                borrowed += pageWindow
                do {
                    plan = try plan.onTrampolinePage(page, disassembler: try Disassembler(.x86_64))
                } catch {
                    unmapTrampolinePage(page, pid: pid)
                    throw error
                }
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
                state: .applying, appliedAt: isoTimestamp(), revertedAt: nil, library: libraryPath,
                libraryBuildID: libraryRecord?.buildID, libraryBase: libraryRecord?.base)
            if let trampoline = plan.trampoline {
                record.originalPointer = hex(trampoline.pointerAddress)
                record.originalPointerSymbol = trampoline.pointerSymbol
                record.originalEntry = hex(trampoline.originalEntry)
            }
            contents.nextID += 1
            contents.patches.append(record)
            try journal.save(contents, for: instance)

            let result: (done: (stepped: [Int32], placed: PlacedTrampoline?), threads: Int, window: UInt64)
            do {
                result = try withStoppedProcess(pid) { tracee in
                    guard let trampolinePlan = plan.trampoline else {
                        let stepped = try StoppedCode.moveThreadsOut(of: plan.range, tracee: tracee)
                        try StoppedCode.checkReturnAddresses(plan.returnAddressesInside, tracee: tracee)
                        try StoppedCode.replace(at: plan.address, old: plan.originalBytes, new: plan.newBytes, tracee: tracee)
                        return ((stepped, nil), tracee.threadIDs.count)
                    }
                    var placed: PlacedTrampoline?
                    var moved: [(tid: Int32, from: UInt64)] = []
                    do {
                        try StoppedCode.checkReturnAddresses(plan.returnAddressesInside, tracee: tracee)
                        placed = try TrampolineSite.place(trampolinePlan, tracee: tracee)
                        moved = try TrampolineSite.moveThreads(into: trampolinePlan.preview, range: plan.range, tracee: tracee)
                        try StoppedCode.replace(at: plan.address, old: plan.originalBytes, new: plan.newBytes, tracee: tracee)
                    } catch {
                        if let placed { TrampolineSite.remove(placed, pointer: trampolinePlan.pointerAddress, moved: moved, tracee: tracee) }
                        if let page = trampolinePlan.page, tracee.processDeath() == nil {
                            try? tracee.remoteMunmap(address: page, length: TrampolineSite.pageSize)
                        }
                        throw error
                    }
                    return ((moved.map(\.tid), placed), tracee.threadIDs.count)
                }
            } catch {
                dropIntent(&contents, instance: instance)
                throw error
            }
            record.state = .applied
            if let placed = result.done.placed {
                record.trampoline = hex(placed.trampoline.address)
                record.trampolinePage = hex(placed.page)
                record.trampolineState = "mapped"
            }
            contents.patches[contents.patches.count - 1] = record
            do {
                try journal.save(contents, for: instance)
            } catch GraftError.journal(let path, let reason) {
                // The intent record saved before the write still names the patch (as `applying`,
                // which list and unpatch judge by memory): say the patch is in, and how to undo it.
                throw GraftError.journal(path: path, reason: "patch \(record.id) was applied, but recording that failed (\(reason)); the journal still has it as being applied: `graft list -p \(pid)` shows it, `graft unpatch -p \(pid) \(record.id)` reverts it")
            }
            var outcome = PatchOutcome(plan: plan, record: record, dryRun: false, steppedThreads: result.done.placed == nil ? result.done.stepped : [],
                                       threadCount: result.threads, stopWindowNanoseconds: result.window)
            outcome.trampoline = result.done.placed?.trampoline
            outcome.movedThreads = result.done.placed == nil ? [] : result.done.stepped
            outcome.borrowedThreadNanoseconds = borrowed
            return outcome
        }
    }

    // MARK: - List

    /// Every patch recorded for this process instance, checked against memory.
    public func list(pid: Int32) throws -> [PatchStatus] {
        try ProcFS.preflightTarget(pid, journalOnly: true)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            var contents = try journal.load(instance)
            // Trampolines kept at a revert (a thread was in them): free those no thread uses now.
            if contents.patches.contains(where: { $0.trampolineState == "kept" }), (try? ProcFS.preflightTarget(pid)) != nil,
               (try? releaseTrampolines(pid: pid, contents: &contents).isEmpty) == false {
                try journal.save(contents, for: instance)
            }
            return contents.patches.map { record in
                let memory = (try? ProcessMemory.read(pid: pid, at: record.addressValue, count: record.new.count)) ?? []
                return PatchStatus(record: record, state: Graft.state(of: record, memory: memory), memoryBytes: memory)
            }
        }
    }

    /// As root: the journals other users made for this process (see `Journal.foreignJournals`),
    /// their patches checked against memory like `list`'s; read only, never acted on.
    public func foreignPatches(pid: Int32) throws -> [(journal: Journal.Foreign, statuses: [PatchStatus])] {
        let instance = try ProcessInstance.current(pid)
        return journal.foreignJournals(instance).map { foreign in
            let statuses = (foreign.contents?.patches ?? []).map { record in
                let memory = (try? ProcessMemory.read(pid: pid, at: record.addressValue, count: record.new.count)) ?? []
                return PatchStatus(record: record, state: Graft.state(of: record, memory: memory), memoryBytes: memory)
            }
            return (foreign, statuses)
        }
    }

    /// The libraries graft loaded into this process instance, checked against memory: `loaded`
    /// (the file's first bytes are at its base), `gone` (the journal says loaded, memory says
    /// otherwise), `unloaded`; with the patches that jump into them.
    public func libraries(pid: Int32) throws -> [LibraryStatus] {
        try ProcFS.preflightTarget(pid, journalOnly: true)
        let instance = try ProcessInstance.current(pid)
        return try journal.withLock(instance, cancel: cancellation) {
            let contents = try journal.load(instance)
            return (contents.libraries ?? []).map { record in
                var state = record.state.rawValue
                if record.state == .loaded {
                    let memory = try? ProcessMemory.read(pid: pid, at: record.baseValue, count: 16)
                    let file = (try? FileIO.readAll(path: record.path))?.prefix(16)
                    state = memory != nil && memory?[...] == file ? "loaded" : memory?.starts(with: [0x7f, 0x45, 0x4c, 0x46]) == true ? "loaded (file changed since)" : "gone"
                }
                let users = record.state == .loaded ? contents.patches.filter { $0.state != .reverted && $0.library == record.path }.map(\.id) : []
                return LibraryStatus(record: record, state: state, usedBy: users)
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

    /// The library a `--library` names, loaded unless graft already did (a dry run loads nothing:
    /// then it must be loaded already); the journal saved when it was loaded now. The loader's
    /// pages are left for the caller's next borrowed-thread window (`cleanup`).
    func libraryForPatch(_ library: String, instance: ProcessInstance, contents: inout JournalContents,
                         dryRun: Bool) throws -> (record: LibraryRecord, cleanup: LoaderCleanup?, borrowed: UInt64) {
        let pid = instance.pid
        if dryRun {
            try ProcFS.preflightTarget(pid)
            let file = try LibraryFile.open(library, pid: pid)
            guard let loaded = Graft.loadedLibrary(file, in: contents, pid: pid) else {
                throw GraftError.usage("\(file.path) is not loaded in process \(pid) yet, and a dry run loads nothing: `graft inject -p \(pid) \(library)` first (it only loads), then the dry run shows the patch")
            }
            return (loaded, nil, 0)
        }
        if let signal = cancellation?() { throw GraftError.interrupted(signal: signal) }
        let outcome = try loadLibrary(instance: instance, contents: &contents, path: library, cleanupLater: true)
        if !outcome.alreadyLoaded { try journal.save(contents, for: instance) }
        return (outcome.record, outcome.pendingCleanup, outcome.alreadyLoaded ? 0 : outcome.stopWindowNanoseconds)
    }

    /// `--to NAME` with `--library`: the library's function, unless NAME has a module or is an address.
    static func name(_ to: String, in library: LibraryRecord) -> String {
        to.contains(":") || to.hasPrefix("0x") ? to : "\(library.name):\(to)"
    }

    /// Runs a load's leftover cleanup in a borrowed-thread window of its own (failures ignored).
    func runCleanup(_ cleanup: LoaderCleanup?, pid: Int32) {
        guard let cleanup, let index = try? SymbolIndex(pid: pid) else { return }
        _ = try? withHijackedThread(pid, index: index) { tracee, thread in cleanup.run(tracee: tracee, thread: thread) }
    }

    /// Unmaps a trampoline page after a refused patch (one borrowed thread); failures are ignored:
    /// an unused anonymous page is all that can be left.
    func unmapTrampolinePage(_ page: UInt64, pid: Int32) {
        guard let index = try? SymbolIndex(pid: pid) else { return }
        _ = try? withHijackedThread(pid, index: index) { tracee, thread in
            _ = try tracee.remoteSyscall(11, [page, TrampolineSite.pageSize], name: "munmap", on: thread)
        }
    }

    // MARK: - Stopping

    /// Attaches (every thread stopped), runs `body` on the tracer thread, detaches. The whole stop
    /// window is one hop to the tracer thread. Returns body's values and the stop window.
    func withStoppedProcess<T>(_ pid: Int32, _ body: (Tracee) throws -> (T, Int)) throws -> (T, Int, UInt64) {
        let tracer = operationTracer.thread
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
                insideStopWindow?(tracee)
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
