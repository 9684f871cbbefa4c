import CGraftShim
import GraftCore

/// One call's fields for `HookFilter`: its hit and, once known, its return.
struct FilteredCall: HookFilterFields {
    let hit: HookHit
    let pid: Int32
    var returnValue: UInt64?
    var tid: Int32 { hit.tid }
    func argument(_ index: Int) -> UInt64? { index < hit.arguments.count ? hit.arguments[index] : nil }
    /// A typed argument by its parameter name: strings as text, enumerators and decoded values
    /// (flags, an output buffer's pointer) as text or number, whichever they are compared with,
    /// the rest as integers (a float only when it is a whole number).
    func value(named name: String) -> HookFilterValue? {
        guard let argument = hit.typedArguments?.first(where: { $0.name == name }) else { return nil }
        switch argument.value {
        case .decoded(let text, let value): return .named(text, Int64(bitPattern: value))
        case .string: return argument.value.string.map { .string($0) }
        case .enumerator(let label?, let value): return .named(label, value)
        case .enumerator(nil, let v), .signed(let v): return .integer(v)
        case .floating(let v, _): return Int64(exactly: v).map { .integer($0) }
        default: return argument.value.number.flatMap { Int64(exactly: $0) }.map { .integer($0) } ?? .integer(Int64(bitPattern: argument.raw))
        }
    }
}

/// `--filter` applied to a hook session's events, between the engine and the caller: a call that
/// does not match is neither reported nor counted (the summary, `--count` and `hitsSoFar` count
/// matching calls). A filter that reads `ret` decides at the return: the hit is held until then and
/// reported just before its return. The engine itself is unchanged: it reads the arguments the
/// filter needs (they are cut back to `--args N` in what is reported).
final class HookCallFilter {
    let filter: HookFilter
    let pid: Int32
    let specs: [HookSpec]
    /// `--args N` of each hook as the user gave it.
    let shownArguments: [Int]
    let reportsCalls: Bool
    let countLimit: Int?
    let stop: () -> Void
    /// Called for each matching call (the session's `hitsSoFar`).
    let onMatch: () -> Void

    enum State { case kept, dropped, undecided }
    /// Per thread, the calls whose return is still to come, innermost last.
    private var open: [Int32: [(hook: Int, call: FilteredCall, state: State)]] = [:]
    private(set) var matched: [Int]
    private(set) var returned: [Int]
    private(set) var durations: [[UInt64]]
    private(set) var rejected = 0
    private var drainingSince: UInt64?
    /// Hooks whose first call was checked for the parameter names the filter uses.
    private var namesChecked: Set<Int> = []

    init(filter: HookFilter, pid: Int32, specs: [HookSpec], shownArguments: [Int], reportsCalls: Bool, countLimit: Int?,
         onMatch: @escaping () -> Void, stop: @escaping () -> Void) {
        self.filter = filter
        self.pid = pid
        self.specs = specs
        self.shownArguments = shownArguments
        self.reportsCalls = reportsCalls
        self.countLimit = countLimit
        self.onMatch = onMatch
        self.stop = stop
        matched = Array(repeating: 0, count: specs.count)
        returned = Array(repeating: 0, count: specs.count)
        durations = Array(repeating: [], count: specs.count)
    }

    /// Whether a hook's calls report a return event (`--returns`, `--set-return`).
    private func reportsReturn(_ hook: Int) -> Bool { specs[hook].returns || specs[hook].setReturn != nil }

    func handle(_ event: HookEvent, onEvent: (HookEvent) -> Void) {
        switch event {
        case .hit(let hit):
            if !filter.names.isEmpty, namesChecked.insert(hit.hook).inserted {
                let known = Set(hit.typedArguments?.map(\.name) ?? [])
                let missing = filter.names.filter { !known.contains($0) }
                if !missing.isEmpty {
                    let have = hit.typedArguments.map { $0.isEmpty ? "it has none" : "its parameters: \($0.map(\.name).joined(separator: ", "))" }
                        ?? "graft knows no types for it"
                    onEvent(.notice("--filter: \(hit.location) has no parameter \(missing.map { "'\($0)'" }.joined(separator: ", ")) (\(have)); comparisons on it are false"))
                }
            }
            // Past --count (the kept calls still running may return): a new call is not counted,
            // as the engine counts no hit while it drains.
            if countReached { break }
            let call = FilteredCall(hit: hit, pid: pid, returnValue: nil)
            let state: State = filter.usesReturnValue ? .undecided : (filter.matches(call) ? .kept : .dropped)
            if state == .kept { keep(call, onEvent: onEvent) } else if state == .dropped { rejected += 1 }
            if reportsReturn(hit.hook) { open[hit.tid, default: []].append((hit.hook, call, state)) }
        case .returned(let value):
            guard let (tid, at) = opened(value), var frames = open[tid] else { break }
            var frame = frames[at]
            if tid == value.tid && !frame.call.hit.goABI {
                // Frames above it were left without a return (longjmp, exceptions): undecided ones are dropped.
                for abandoned in frames[(at + 1)...] where abandoned.state == .undecided { rejected += 1 }
                frames.removeSubrange(at...)
            } else {
                // A goroutine's call: the frames above it on its thread are other goroutines' calls
                // still running (it blocked, and returns here or on another thread).
                frames.remove(at: at)
            }
            open[tid] = frames.isEmpty ? nil : frames
            if frame.state == .undecided && countReached {
                frame.state = .dropped  // decided after --count was reached: not counted
            } else if frame.state == .undecided {
                frame.call.returnValue = value.value
                if filter.matches(frame.call) {
                    keep(frame.call, onEvent: onEvent)
                    frame.state = .kept
                } else {
                    rejected += 1
                }
            }
            if frame.state == .kept {
                returned[value.hook] += 1
                if durations[value.hook].count < 1_000_000 { durations[value.hook].append(value.durationNanoseconds) }
                if reportsCalls { onEvent(event) }
            }
        default:
            onEvent(event)
        }
        checkCount()
    }

    /// Where the call `value` ends is open: by its call number (`HookHit.call`), on its thread or —
    /// a goroutine resumed elsewhere — on the thread it was called on; without one, the thread's
    /// innermost call of that hook.
    private func opened(_ value: HookReturn) -> (tid: Int32, index: Int)? {
        guard value.call != 0 else {
            return open[value.tid]?.lastIndex(where: { $0.hook == value.hook }).map { (value.tid, $0) }
        }
        if let at = open[value.tid]?.lastIndex(where: { $0.call.hit.call == value.call }) { return (value.tid, at) }
        for (tid, frames) in open {
            if let at = frames.lastIndex(where: { $0.call.hit.call == value.call }) { return (tid, at) }
        }
        return nil
    }

    private func keep(_ call: FilteredCall, onEvent: (HookEvent) -> Void) {
        let hit = call.hit
        matched[hit.hook] += 1
        onMatch()
        guard reportsCalls else { return }
        let shown = shownArguments[hit.hook]
        guard hit.arguments.count > shown || (hit.typedArguments?.count ?? 0) > shown else {
            onEvent(.hit(hit))
            return
        }
        var cut = HookHit(hook: hit.hook, location: hit.location, tid: hit.tid, address: hit.address,
                          arguments: Array(hit.arguments.prefix(shown)), backtrace: hit.backtrace, wallTime: hit.wallTime)
        cut.typedArguments = shown == 0 ? nil : hit.typedArguments.map { Array($0.prefix(shown)) }
        cut.goABI = hit.goABI
        cut.call = hit.call
        onEvent(.hit(cut))
    }

    /// `--count` over matching calls: once reached, the kept calls still running may return (at most
    /// one second), then the session ends.
    private var countReached: Bool { countLimit.map { matched.reduce(0, +) >= $0 } ?? false }

    private func checkCount() {
        guard countReached else { return }
        let waiting = open.values.contains { $0.contains { $0.state == .kept } }
        let now = graft_monotonic_ns()
        if drainingSince == nil { drainingSince = now }
        if !waiting || now &- (drainingSince ?? now) > 1_000_000_000 { stop() }
    }

    /// The engine's summary with the matching calls' figures.
    func summary(_ summary: HookSummary) -> HookSummary {
        var hooks = summary.hooks
        for i in hooks.indices {
            hooks[i].hits = matched[i]
            hooks[i].returns = returned[i]
            hooks[i].durations = durations[i]
        }
        var out = HookSummary(hooks: hooks, end: summary.end, elapsedNanoseconds: summary.elapsedNanoseconds,
                              codeRestored: summary.codeRestored)
        out.filteredOut = rejected
        return out
    }
}

extension HookFilter {
    /// What a session must check before it starts: every field the filter reads exists for these
    /// hooks. `names`: the parameter names known before the session (from the hooks' types with
    /// -p); nil: learnt from each hook's typed arguments as calls come (launch mode: a name a hook
    /// lacks is then a notice, and its comparisons false).
    public func check(for specs: [HookSpec], names available: Set<String>? = nil) throws {
        let raw = !specs.isEmpty && specs.allSatisfy(\.raw)
        if let name = names.first(where: { raw || !(available?.contains($0) ?? true) }) {
            let known = raw ? ", which --raw turns off"
                : available.map { $0.isEmpty ? " (graft found none for these functions: no debug information or libc prototype)" : " (their parameters: \($0.sorted().joined(separator: ", ")))" } ?? ""
            throw GraftError.usage("--filter '\(text)': no field '\(name)': the fields are tid, pid, ret, arg0…arg\(Self.maxArguments - 1) and parameter names from typed arguments\(known)")
        }
        if usesReturnValue, let spec = specs.first(where: { !$0.returns && $0.setReturn == nil }) {
            throw GraftError.usage("--filter '\(text)' reads ret, the return value: add --returns (\(spec.location) reports none)")
        }
    }
}
