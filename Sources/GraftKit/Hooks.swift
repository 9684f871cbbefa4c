import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// What to do at one hooked LOCATION.
public struct HookSpec: Sendable, Equatable {
    /// LOCATION as the user wrote it (`NAME`, `MODULE:NAME`, `NAME+OFF`, `0xADDR`).
    public var location: String
    /// How many SysV integer arguments to report (rdi, rsi, rdx, rcx, r8, r9, then the stack).
    public var argumentCount: Int
    /// Report a backtrace with every hit.
    public var backtrace: Bool
    /// Report the return value and duration of every call.
    public var returns: Bool
    /// Change the return value to this on the way out (with `skip`: return it at once).
    public var setReturn: Int64?
    /// Return `setReturn` at once without running the function.
    public var skip: Bool
    /// Expanded from a pattern (`Graft.hookSpecs`): a function that cannot take a hook (too short,
    /// an IFUNC, a first instruction graft cannot displace) is skipped with a notice, not fatal.
    public var fromPattern = false
    /// Report arguments and results as raw registers even when their types are known (`--raw`).
    public var raw = false

    public init(location: String, argumentCount: Int = 0, backtrace: Bool = false, returns: Bool = false,
                setReturn: Int64? = nil, skip: Bool = false) {
        self.location = location
        self.argumentCount = argumentCount
        self.backtrace = backtrace
        self.returns = returns
        self.setReturn = setReturn
        self.skip = skip
    }

    /// Whether graft must catch the return (a return breakpoint at the caller).
    var catchesReturn: Bool { (returns || setReturn != nil) && !skip }
}

/// When a session ends on its own.
public struct HookLimits: Sendable {
    /// Total hits over all hooks.
    public var count: Int?
    /// Seconds.
    public var duration: Double?
    public init(count: Int? = nil, duration: Double? = nil) {
        self.count = count
        self.duration = duration
    }
}

/// A hook as armed: where its breakpoint is and how the displaced instruction is handled.
public struct ArmedHook: Sendable {
    public let index: Int
    public let location: String
    /// `module!function+0xoff`.
    public let function: String
    public let address: UInt64
    /// The instruction the int3 displaced, and how it runs: "emulated (push)", "out of line".
    public let instruction: String
    public let strategy: String
}

/// One call of a hooked function.
public struct HookHit: Sendable {
    public let hook: Int
    public let location: String
    public let tid: Int32
    public let address: UInt64
    public let arguments: [UInt64]
    public let backtrace: [BacktraceFrame]
    /// CLOCK_REALTIME nanoseconds of the hit.
    public let wallTime: UInt64
    /// The arguments as their types say (DWARF, or a libc prototype), nil when graft knows no
    /// types for the function or `--raw` asked for registers (`ArgumentDecoder`).
    public var typedArguments: [TypedArgument]? = nil
    /// The arguments were read with Go's register ABI (rax, rbx, rcx, rdi, rsi, r8–r11).
    public var goABI = false
    /// The session's number for this call (from 1), which its `HookReturn` repeats: a printer
    /// pairs a call with its return by it, whatever thread the return comes on. 0: not numbered.
    public var call: UInt64 = 0
}

/// One return of a hooked function.
public struct HookReturn: Sendable {
    public let hook: Int
    public let location: String
    public let tid: Int32
    /// rax as the function left it.
    public let value: UInt64
    /// rax as the caller sees it (differs with --set-return).
    public let returnedValue: UInt64
    public let durationNanoseconds: UInt64
    public let wallTime: UInt64
    /// The result as its type says (`3`, `2.5` from xmm0, a string), nil when the type is unknown,
    /// `void`, or `--raw` was asked for.
    public var typedValue: TypedArgument? = nil
    /// The `HookHit.call` of the call this return ends (0: not known).
    public var call: UInt64 = 0
    /// The call's output buffers as it left them (`read`'s `buf`: the bytes it read), by the
    /// parameter's name; empty when it has none, or failed.
    public var outputs: [TypedArgument] = []
    /// A Go function's results, all of them in order, when it has more than one (`typedValue` is the
    /// first); nil otherwise. `resultText` and `resultJSONFields` format them.
    public var typedValues: [TypedArgument]? = nil
}

public enum HookEvent: Sendable {
    case armed([ArmedHook])
    case hit(HookHit)
    case returned(HookReturn)
    /// `graft watch`: the watched variable was written (or accessed).
    case watched(WatchHit)
    /// Something the user should know that is not a call: a fork child released, an exec.
    case notice(String)
    /// Trace mode: one executed instruction (only when `TraceOptions.reportSteps`).
    case step(TraceStep)
    /// Trace mode: a thread entered the traced function (`began`) or returned from it.
    case traceCall(TraceCall)
    /// Trace mode without per-step events: every 8192 instructions, how many so far and where.
    case traceProgress(steps: UInt64, function: String)
}

/// Why a session ended.
public enum HookSessionEnd: Sendable, Equatable {
    case signal(Int32)
    case count
    case duration
    case requested
    case targetExited(ThreadStop)
    case targetExec
    /// Trace mode: the traced thread exited (the process lives on).
    case threadExited(Int32)
    /// Trace mode: `--calls` calls were traced.
    case callsTraced
}

public struct HookStatistics: Sendable {
    public let location: String
    public let function: String
    public var hits: Int = 0
    public var returns: Int = 0
    /// A sample of call durations in nanoseconds (all of them up to 1,000,000, then a reservoir).
    public var durations: [UInt64] = []

    /// The p-th percentile (0…100) of the sampled durations.
    public func durationPercentile(_ p: Double) -> UInt64? {
        guard !durations.isEmpty else { return nil }
        let sorted = durations.sorted()
        let rank = Int((p / 100 * Double(sorted.count - 1)).rounded())
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }
}

extension HookStatistics {
    /// Time spent in the hook's calls: the sampled durations' mean × the returns seen (exact up to a
    /// million returns, an estimate beyond). 0 without `--returns`.
    public var totalTimeNanoseconds: UInt64 {
        guard !durations.isEmpty else { return 0 }
        let sum = durations.reduce(0.0) { $0 + Double($1) }
        return UInt64(sum / Double(durations.count) * Double(returns))
    }
}

/// How a summary lists its hooks (`--sort`).
public enum HookSummaryOrder: String, Sendable, CaseIterable {
    /// Most calls first (the default).
    case hits
    /// Most time in the calls first (needs `--returns`).
    case time

    /// `hooks` in this order; ties keep the hooks' order on the command line.
    public func sorted(_ hooks: [HookStatistics]) -> [HookStatistics] {
        let keyed = hooks.enumerated().map { (offset: $0.offset, stats: $0.element) }
        return keyed.sorted { a, b in
            let (x, y): (UInt64, UInt64) = self == .hits
                ? (UInt64(a.stats.hits), UInt64(b.stats.hits))
                : (a.stats.totalTimeNanoseconds, b.stats.totalTimeNanoseconds)
            return x != y ? x > y : a.offset < b.offset
        }.map(\.stats)
    }
}

public struct HookSummary: Sendable {
    public let hooks: [HookStatistics]
    public let end: HookSessionEnd
    public let elapsedNanoseconds: UInt64
    /// Breakpoints removed and the code verified equal to what it was before the session.
    public let codeRestored: Bool
    public var totalHits: Int { hooks.reduce(0) { $0 + $1.hits } }
    /// Calls that did not match `--filter` (not in `hooks`' figures).
    public var filteredOut = 0
}

extension Graft {
    /// Hook specs for `locations`, each like `template`: a LOCATION as it is, a pattern (a glob:
    /// `ngx_http_*`, `libc:str*`, `shapes::Circle::*`) expanded to every function it matches (one
    /// spec per address, `fromPattern`). A pattern that matches nothing says so with close names;
    /// more than `maxHooks` functions in all is refused with the count.
    public func hookSpecs(pid: Int32, locations: [String], template: HookSpec, maxHooks: Int = 1_000) throws -> [HookSpec] {
        var specs: [HookSpec] = []
        var addresses: Set<UInt64> = []
        for location in locations {
            // A glob character makes a pattern, unless the text is a LOCATION that resolves as it is
            // (a C++ signature: `areaOf(shapes::Shape const*)`).
            let isPattern = location.contains(where: { "*?[".contains($0) })
                && (try? Graft.symbolIndex(pid: pid, journal: journal).resolve(Location.parse(location))) == nil
            guard isPattern else {
                var spec = template
                spec.location = location
                specs.append(spec)
                continue
            }
            let found = try symbols(pid: pid, matching: location)
            if found.isEmpty {
                let bare = String(location.split(separator: ":").last ?? "").filter { !"*?[]".contains($0) }
                let names = (try? symbols(pid: pid, matching: nil))?.compactMap { $0.symbol?.displayName } ?? []
                let close = bare.isEmpty ? [] : Suggestions.best(for: bare, among: Array(Set(names)), limit: 5)
                throw GraftError.usage("no function matches '\(location)'\(close.isEmpty ? "" : "; close names: \(close.joined(separator: ", "))")")
            }
            for function in found where addresses.insert(function.address).inserted {
                guard let module = function.module, let symbol = function.symbol else { continue }
                var spec = template
                // The name as printed (C++ demangled): it is a LOCATION as well.
                spec.location = "\(module.name):\(Demangler.isMangled(symbol.name) ? symbol.displayName : symbol.versionedName)"
                spec.fromPattern = true
                specs.append(spec)
            }
            if specs.count > maxHooks {
                throw GraftError.usage("'\(location)' brings the hooks to \(specs.count) functions, more than --max-hooks \(maxHooks); narrow the pattern or raise --max-hooks")
            }
        }
        return specs
    }
}

extension Graft {
    /// Launch mode, before the program runs: whether `location`, though it has a glob character,
    /// names a function of the program's own file as it is — Go's `main.(*Worker).Compute`, a C++
    /// signature `areaOf(shapes::Shape const*)` — so that it is a LOCATION, not a pattern (which
    /// needs -p: the libraries are not loaded yet). With a module, it must be the program's.
    public static func namesProgramFunction(_ location: String, command: String) -> Bool {
        guard let path = try? Tracee.resolveExecutable(command), let file = try? ELFFileCache.open(path),
              let parsed = try? Location.parse(location), case .symbol(let module, let name) = parsed.base else { return false }
        if let module {
            let fileName = String(path.split(separator: "/").last ?? "")
            guard fileName == module || fileName.hasPrefix(module + ".") else { return false }
        }
        if !file.symbols(named: name).isEmpty { return true }
        return file.functionSymbols.contains { SymbolNames.demangled($0.name) == name }
    }
}
