import ArgumentParser
import GraftCore
import GraftKit
import GraftELF
import Glibc

extension HookSummaryOrder: ExpressibleByArgument {}

struct HookCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hook",
        abstract: "Report every call of functions in a running process (int3 breakpoints that stay armed).",
        discussion: """
        Prints one line per call until Ctrl-C, SIGTERM, SIGHUP, --count, --duration or the target's exit, \
        then removes every breakpoint, checks the code is as before, and prints a summary. With \
        `-- COMMAND` graft starts COMMAND, arms the hooks before its main runs, and exits with its status.
        Examples:
          graft hook -p 4242 hook_f --args 2 --returns
          graft hook -p 4242 libc:open --args 2
          graft hook -p 4242 libc:getppid --backtrace --count 10
          graft hook -p 4242 value_a --set-return 7 --skip
          graft hook -p 4242 price --hardware
          graft hook -p 4242 hook_f --args 2 --filter 'arg0 > 2 && tid == 4243'
          graft hook -p 4242 'libc:str*' --returns --quiet --sort time
          graft hook hook_f --returns -- ./hook_count 100
        """)

    @Option(name: [.customShort("p"), .customLong("pid")], parsing: .unconditionalSingleValue,
            help: ArgumentHelp("The process to hook (several: -p 8153,8293, or -p repeated; or give `-- COMMAND`).", valueName: "pid"))
    var pidArguments: [ProcessIDList] = []

    @Option(name: [.customShort("n"), .customLong("name")],
            help: ArgumentHelp("Hook every process whose executable (or comm) is NAME.", valueName: "name"))
    var names: [String] = []

    @Flag(name: .long, help: "Also hook the processes the hooked ones fork after the session started (their calls carry their pid).")
    var follow = false

    /// The one process of a plain session (-p with one pid), once `validate()` has run.
    var pid: Int32? { pidArguments.isEmpty ? nil : pidArguments.flatMap(\.items).first?.value ?? 0 }
    /// Several processes (a list, -n) or --follow: one session per process (`HookFleet`).
    var isFleet: Bool { follow || !names.isEmpty || pidArguments.flatMap(\.items).count > 1 }

    @Argument(help: "Functions to hook (LOCATION: NAME, MODULE:NAME, NAME+OFFSET, 0xADDRESS).")
    var locations: [String] = []

    @Option(name: .customLong("args"), help: ArgumentHelp("Report this many arguments: typed and named from DWARF (or a libc prototype) when known, else integer registers (SysV: rdi, rsi, rdx, rcx, r8, r9, then the stack).", valueName: "N"))
    var argumentCount: Int = 0

    @Flag(name: .long, help: "Report arguments and return values as raw registers even when their types are known.")
    var raw = false

    @Flag(name: .long, help: "Report a stack trace with every call (libunwind, .eh_frame).")
    var backtrace = false

    @Flag(name: .long, help: "Report each call's return value (typed when known: a float or double from xmm0; else rax in hex) and duration.")
    var returns = false

    @Option(name: .customLong("set-return"), parsing: .unconditional,
            help: ArgumentHelp("Make the hooked function return this integer (decimal or 0x hex, may be negative).", valueName: "INT"))
    var setReturnArgument: Integer64?
    var setReturn: Int64? { setReturnArgument?.value }

    @Flag(name: .long, help: "With --set-return: return at once without running the function.")
    var skip = false

    @Option(name: .long, help: ArgumentHelp("End after this many calls in total.", valueName: "N"))
    var count: Int?

    @Option(name: .long, help: ArgumentHelp("End after this many seconds.", valueName: "SECONDS"))
    var duration: Double?

    @Flag(name: .long, help: "Print one JSON object per line, each with an \"event\" key.")
    var json = false

    @Flag(name: [.customShort("q"), .long], help: "Print only the summary, not every call.")
    var quiet = false

    @Option(name: .long, help: ArgumentHelp("Keep only calls matching EXPR, e.g. 'tid == 4243', 'arg0 > 2 && ret < 0' (fields tid, pid, ret, arg0…arg15, parameter names; == != < <= > >=; && || ! and parentheses; see docs/hooks.md).", valueName: "EXPR"))
    var filter: String?

    @Option(name: .long, help: ArgumentHelp("Order of the summary: hits (default) or time (total time in the calls; needs --returns).", valueName: "hits|time"))
    var sort: HookSummaryOrder = .hits

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Journal directory.", visibility: .hidden))
    var stateDirectory: String?

    /// After `--` (split off by GraftCLI.run).
    var command: [String] { Passthrough.command }

    @Flag(name: .long, help: "Print linkage (mangled) names of C++ and Rust functions instead of demangled ones.")
    var mangled = false

    @Option(name: .customLong("max-hooks"), help: "The most functions patterns may bring (default 1000).")
    var maxHooks = 1_000

    @Flag(name: .customLong("no-wait"), help: "Refuse a LOCATION in a library the process has not loaded yet, instead of hooking it when the process loads it.")
    var noWait = false

    @Flag(name: .long, help: "Use the CPU's debug registers (DR0–DR3) instead of int3s: no byte of code changes; at most four functions (three with --returns).")
    var hardware = false

    func validate() throws {
        SymbolNames.mangled = mangled
        for argument in pidArguments { try argument.check() }
        if locations.isEmpty { throw ValidationError("give at least one LOCATION to hook") }
        if Passthrough.hasTerminator && command.isEmpty { throw ValidationError("give a command to start after `--`") }
        if pid == nil && names.isEmpty && command.isEmpty { throw ValidationError("give -p PID, -n NAME, or a command after `--`") }
        if (pid != nil || !names.isEmpty) && !command.isEmpty { throw ValidationError("give -p PID (or -n NAME) or `-- COMMAND`, not both") }
        if follow && !command.isEmpty { throw ValidationError("--follow goes with -p PID or -n NAME, not with `-- COMMAND`") }
        if skip && setReturn == nil { throw ValidationError("--skip needs --set-return INT (the value to return)") }
        if (setReturn != nil) && locations.count > 1 { throw ValidationError("--set-return applies to one LOCATION; give exactly one") }
        if argumentCount < 0 || argumentCount > 16 { throw ValidationError("--args takes 0 to 16") }
        if let count, count <= 0 { throw ValidationError("--count must be at least 1") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be a positive number of seconds") }
        if sort == .time && !returns && setReturn == nil { throw ValidationError("--sort time needs --returns (the calls' durations)") }
        if let filter { _ = try HookFilter(parsing: filter) }
    }

    func run() throws {
        if isFleet {
            try runFleet()
            return
        }
        var template = HookSpec(location: "", argumentCount: argumentCount, backtrace: backtrace, returns: returns,
                                setReturn: setReturn, skip: skip)
        template.raw = raw
        let specs: [HookSpec]
        if let pid {
            specs = try Graft(journal: Journal(directory: stateDirectory)).hookSpecs(pid: pid, locations: locations, template: template, maxHooks: maxHooks)
        } else {
            if let pattern = locations.first(where: { location in
                location.contains(where: { "*?[".contains($0) }) && !Graft.namesProgramFunction(location, command: command[0])
            }) {
                throw GraftError.usage("'\(pattern)' is a pattern: patterns need -p PID (a program graft starts has not loaded its libraries yet)")
            }
            specs = locations.map { var spec = template; spec.location = $0; return spec }
        }
        if setReturn != nil && specs.count > 1 {
            throw GraftError.usage("--set-return applies to one function; the pattern matched \(specs.count)")
        }
        let limits = HookLimits(count: count, duration: duration)
        let journal = Journal(directory: stateDirectory)
        let session: HookSession
        if let pid {
            session = HookSession(pid: pid, specs: specs, limits: limits, journal: journal)
        } else {
            session = try HookSession(launching: command, specs: specs, limits: limits, journal: journal)
        }
        session.reportsCalls = !quiet
        session.hardware = hardware
        session.waitsForLibraries = !noWait
        session.filter = try filter.map { try HookFilter(parsing: $0) }
        let printer = HookPrinter(json: json, quiet: quiet, argumentCount: argumentCount, launched: !command.isEmpty)
        printer.order = sort
        printer.filtered = filter != nil
        printer.combinesReturns = returns || setReturn != nil
        session.holdsOutput = { printer.holdsOutput }
        printer.hitsSoFar = { [session] in session.hitsSoFar }
        printer.ending = SessionEnding(count: count, duration: duration, pid: pid, unit: "call")
        TerminationSignals.deferAll(holdStop: command.isEmpty, announceStop: true, session: true)
        let summary: HookSummary
        do {
            summary = try session.run(
                stopCheck: { TerminationSignals.sessionEnd.map { HookSessionEnd.signal($0) } },
                flush: { printer.flush() },
                onEvent: { printer.event($0) },
                onEnd: { printer.summary($0) })  // launch mode: before waiting for the command
        } catch {
            printer.clearStatus()
            throw error
        }
        TerminationSignals.restoreDefaults()
        if !summary.codeRestored {
            throw GraftError.usage("the code of process \(session.pid) could not be verified after removing the breakpoints")
        }
        if let status = session.launchedExitStatus {
            throw CommandFailed(code: status)
        }
        if case .signal(let signal) = summary.end { throw CommandFailed(code: 128 + signal) }
    }
}
