import ArgumentParser
import GraftCore
import GraftKit

struct PatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patch",
        abstract: "Overwrite a function's entry with a jump to another function, or with a \"return N\" stub.",
        discussion: """
        Every check runs before the first write; a refused patch writes nothing. The patch stays after \
        graft exits and is recorded in the journal (see `graft list`, `graft unpatch`).
        Examples:
          graft patch -p 4242 value_a --to value_b
          graft patch -p 4242 libc:getpid --return 42 --dry-run
          graft patch -p 4242 price --library ./libfix.so --to fixed_price
          graft patch -p 4242 --got nginx:write --library ./libfix.so --to logged_write
          graft patch -n nginx ngx_http_parse_chunked --library ./libfix.so --to fixed_parse_chunked
          graft patch -p 8153,8293 value_a --return 5 --each
          graft patch --file ./prog price --to cheap -o ./prog.patched    (a program file, not a process: graft patch --file FILE --help)
        With --library, the library is loaded first (once per process; see `graft inject`) and --to \
        names its function. When the library defines graft_original_<function> (include/graft.h: \
        GRAFT_ORIGINAL), graft relocates the instructions the jump overwrites into a trampoline and \
        points graft_original_<function> at it before the jump goes live: the replacement can call \
        the original.
        --got MODULE:SYMBOL redirects only MODULE's calls to SYMBOL: its GOT slot (one aligned word) \
        gets the --to address; graft_original_<function> gets what the slot led to.
        Several processes (-p 8153,8293, -n NAME): all or nothing — every process's checks run \
        first, and a process that refuses means none is patched (reverted where already applied); \
        --each patches those that accept.
        """)

    @OptionGroup var process: ProcessOptions

    @Argument(help: "The function to patch (LOCATION); not with --got.")
    var location: String?

    @Option(name: .customLong("vtable"), help: ArgumentHelp("Redirect a virtual method of this C++ class (its vtable slot): with --method or --slot.", valueName: "CLASS"))
    var vtable: String?

    @Option(name: .customLong("method"), help: ArgumentHelp("With --vtable: the method, as in the source (area, 'area() const').", valueName: "SIGNATURE"))
    var method: String?

    @Option(name: .customLong("slot"), help: ArgumentHelp("With --vtable: the slot's index among the class's virtual functions.", valueName: "N"))
    var slot: Int?

    @Option(name: .customLong("got"), help: ArgumentHelp("Redirect only this module's calls to SYMBOL: its GOT slot gets the --to address.", valueName: "MODULE:SYMBOL"))
    var got: String?

    @Option(name: .customLong("to"), help: "Jump to this LOCATION.")
    var target: String?

    @Option(name: .customLong("return"), parsing: .unconditional,
            help: ArgumentHelp("Return this integer at once (decimal or 0x hex, may be negative: --return -1).", valueName: "INT"))
    var returnArgument: Integer64?
    var returnValue: Int64? { returnArgument?.value }

    @Option(name: .customLong("library"), help: ArgumentHelp("Load this shared library first (unless graft already did) and jump to its function --to NAME.", valueName: "LIB"))
    var library: String?

    @Flag(name: .customLong("mid-function"),
          help: "Accept a LOCATION or a --to target inside a function after code that moved the stack pointer, or in a .cold part (refused otherwise: a ret there would return to the wrong address).")
    var midFunction = false

    @Flag(name: .customLong("dry-run"), help: "Show the checks, the address and the bytes, disassembled; write nothing.")
    var dryRun = false

    @Flag(name: .long, help: "With several processes: patch every one that accepts, past a refusal (default: all or nothing).")
    var each = false

    func validate() throws {
        try process.requireTargets(command: "patch")
        if process.isMany && (got != nil || vtable != nil) {
            throw ValidationError("--got and --vtable work on one process; give one pid with -p")
        }
        if library != nil && target == nil {
            throw ValidationError("--library needs --to NAME: the function of the library to jump to")
        }
        if (target == nil) == (returnValue == nil) {
            throw ValidationError("give exactly one of --to LOCATION or --return INT")
        }
        let forms = [location != nil, got != nil, vtable != nil].filter { $0 }.count
        if forms != 1 {
            throw ValidationError(forms == 0 ? "give the LOCATION to patch, --got MODULE:SYMBOL or --vtable CLASS" : "give one of a LOCATION, --got and --vtable")
        }
        if vtable != nil && (method == nil) == (slot == nil) {
            throw ValidationError("--vtable needs one of --method SIGNATURE or --slot N")
        }
        if vtable != nil && target == nil {
            throw ValidationError("--vtable needs --to LOCATION: the new function")
        }
        if got != nil && target == nil {
            throw ValidationError("--got needs --to LOCATION: where the module's calls should go")
        }
    }

    func run() throws {
        if let got, let target {
            try runGOT(slot: got, to: target)
            return
        }
        if let vtable, let target {
            try runVTable(className: vtable, to: target)
            return
        }
        let action: PatchAction = target.map { .jump(to: $0) } ?? .returnValue(returnValue!)
        if process.isMany {
            try runMany(action: action)
            return
        }
        let outcome = try withTerminationDeferred {
            try process.cancellableGraft.patch(pid: process.pid, location: location ?? "", action: action, dryRun: dryRun, midFunction: midFunction,
                                                 library: library)
        }
        if process.json {
            Output.json(outcome.json)
            return
        }
        let plan = outcome.plan
        let what: String
        switch plan.action {
        case .jump: what = "jump to \(plan.target?.description ?? "?") (\(plan.encoding))"
        case .returnValue(let value): what = "return \(value)"
        }
        if outcome.dryRun {
            Output.line("dry run: would patch \(plan.location) at \(hex(plan.address)) with \(what); nothing written")
            Output.line("checks passed:")
            for check in plan.checks { Output.line("  ok  \(check)") }
            Output.line("  (threads inside the bytes are checked, and stepped out, when the process is stopped)")
        } else {
            let id = outcome.record.map { "patch \($0.id)" } ?? "patch"
            Output.line("\(id): \(plan.location) at \(hex(plan.address)) now does: \(what)")
        }
        printBytes(original: plan.originalBytes, plan.originalInstructions, new: plan.newBytes, plan.newInstructions)
        if plan.encoding == "jmp [rip+0]" {
            Output.line("  \(hex(plan.address + 6))  .quad \(hex(plan.target?.address ?? 0))")
        }
        if let trampoline = plan.trampoline {
            let placed = outcome.trampoline
            let address = placed?.address ?? trampoline.preview.address
            Output.line("\(outcome.dryRun ? "trampoline (at its final place its branches are re-aimed)" : "trampoline at \(hex(address))"): the moved instructions, then a jump back to \(hex(trampoline.preview.resumeAddress)); \(trampoline.pointerSymbol) = \(outcome.dryRun ? "its address" : hex(address))")
            if !outcome.movedThreads.isEmpty {
                Output.line("moved into the trampoline (they were inside the overwritten bytes): thread \(outcome.movedThreads.map(String.init).joined(separator: ", "))")
            }
        }
        if !outcome.dryRun {
            let ms = Double(outcome.stopWindowNanoseconds) / 1e6
            var tail = "process stopped for \(formatMilliseconds(ms)) (\(outcome.threadCount) thread\(outcome.threadCount == 1 ? "" : "s"))"
            if !outcome.steppedThreads.isEmpty {
                tail += "; stepped out of the patched bytes: thread \(outcome.steppedThreads.map(String.init).joined(separator: ", "))"
            }
            Output.line(tail)
            if outcome.borrowedThreadNanoseconds > 0 {
                Output.line("before that, one thread was borrowed for \(formatMilliseconds(Double(outcome.borrowedThreadNanoseconds) / 1e6)) to load the library and map the trampoline's page (the others ran on)")
            }
            if let record = outcome.record { Output.line("undo with: graft unpatch -p \(process.pid) \(record.id)") }
        }
    }
}

extension PatchCommand {
    /// One patch over several processes: all or nothing unless --each; one line per process.
    func runMany(action: PatchAction) throws {
        let pids = try process.targets()
        let results = try withTerminationDeferred {
            process.cancellableGraft.patch(pids: pids, location: location ?? "", action: action, dryRun: dryRun,
                                           midFunction: midFunction, library: library, each: each)
        }
        let refused = results.filter { $0.outcome == .refused }
        for result in results {
            let pid = result.pid
            if process.json {
                if let patch = result.patch, result.outcome == .patched {
                    Output.json(patch.json)
                    continue
                }
                var fields: [(String, JSON)] = [("event", .string("patch-\(result.outcome.rawValue)")), ("pid", .int(Int64(pid)))]
                if let id = result.patch?.record?.id { fields.append(("id", .int(Int64(id)))) }
                if let error = result.error { fields.append(("message", .string(error.description))) }
                if let error = result.rollbackError { fields.append(("rollback_error", .string(error.description))) }
                Output.json(.object(fields))
                continue
            }
            let name = "process \(pid) (\(ProcFSName.of(pid)))"
            switch result.outcome {
            case .patched:
                guard let patch = result.patch else { continue }
                let what: String
                switch patch.plan.action {
                case .jump: what = "jump to \(patch.plan.target?.description ?? "?")"
                case .returnValue(let value): what = "return \(value)"
                }
                if patch.dryRun {
                    Output.line("\(name): dry run: would patch \(patch.plan.location) at \(hex(patch.plan.address)) with \(what); checks passed")
                } else {
                    Output.line("\(name): patch \(patch.record?.id ?? 0): \(patch.plan.location) at \(hex(patch.plan.address)) now does: \(what) (stopped \(formatMilliseconds(Double(patch.stopWindowNanoseconds) / 1e6)))")
                }
            case .refused:
                Output.line("\(name): refused: \(result.error?.description ?? "?")")
            case .rolledBack:
                Output.line("\(name): patch \(result.patch?.record?.id ?? 0) reverted again (another process refused; all or nothing)")
            case .notPatched:
                if let error = result.rollbackError {
                    Output.line("\(name): patch \(result.patch?.record?.id ?? 0) is applied and could not be reverted: \(error.description)")
                } else {
                    Output.line("\(name): not patched (another process refused; all or nothing)")
                }
            }
        }
        guard !refused.isEmpty else { return }
        let names = refused.map { String($0.pid) }.joined(separator: ", ")
        if each {
            throw GraftError.usage("\(results.count - refused.count) of \(results.count) processes patched; refused in process\(refused.count == 1 ? "" : "es") \(names) (see above)")
        }
        if refused.count == 1, let error = refused[0].error, !process.json {
            throw GraftError.usage("process \(refused[0].pid) refused (\(error.description)); none of the \(results.count) processes was patched (--each patches those that accept)")
        }
        throw GraftError.usage("refused in process\(refused.count == 1 ? "" : "es") \(names); none of the \(results.count) processes was patched (--each patches those that accept)")
    }

    func runVTable(className: String, to: String) throws {
        let outcome = try withTerminationDeferred {
            try process.cancellableGraft.patchVTable(pid: process.pid, className: className, method: method, index: slot, to: to,
                                                     library: library, dryRun: dryRun)
        }
        if process.json {
            Output.json(outcome.json)
            return
        }
        let plan = outcome.plan
        printWordPatch(what: "\(className)'s virtual \(plan.method) (vtable slot \(plan.slotIndex) at \(hex(plan.slot))) now calls \(plan.target)",
                       dryRun: outcome.dryRun, checks: plan.checks, record: outcome.record, window: outcome.stopWindowNanoseconds,
                       lines: ["slot: \(hex(plan.currentValue)) -> \(hex(plan.target.address))"]
                           + (plan.originalPointerSymbol.map { ["\($0) = \(hex(plan.currentValue)) (\(plan.method))"] } ?? [])
                           + (plan.notChanged.isEmpty ? [] : ["not changed (their own vtables): \(plan.notChanged.joined(separator: "; "))"]))
    }

    /// The text of a one-word patch (--vtable, --got): what, the checks on a dry run, the detail
    /// lines, the stop and how to undo it.
    func printWordPatch(what: String, dryRun: Bool, checks: [String], record: PatchRecord?, window: UInt64, lines: [String]) {
        if dryRun {
            Output.line("dry run, nothing written; the patch would be: \(what)")
            Output.line("checks passed:")
            for check in checks { Output.line("  ok  \(check)") }
        } else {
            Output.line("patch \(record?.id ?? 0): \(what)")
        }
        for line in lines { Output.line(line) }
        if !dryRun, let record {
            Output.line("process stopped for \(formatMilliseconds(Double(window) / 1e6)); undo with: graft unpatch -p \(process.pid) \(record.id)")
        }
    }

    func runGOT(slot: String, to: String) throws {
        let outcomes = try withTerminationDeferred {
            try process.cancellableGraft.patchGOT(pid: process.pid, slot: slot, to: to, library: library, dryRun: dryRun)
        }
        for outcome in outcomes {
            if process.json {
                Output.json(outcome.json)
                continue
            }
            let plan = outcome.plan
            printWordPatch(what: "\(plan.module)'s calls to \(plan.symbol) go to \(plan.target) (GOT slot \(hex(plan.slot)), \(plan.relocation))",
                           dryRun: outcome.dryRun, checks: plan.checks, record: outcome.record, window: outcome.stopWindowNanoseconds,
                           lines: ["slot: \(hex(plan.currentValue)) (\(plan.bound ? plan.original.description : "not bound yet: \(plan.module)'s PLT")) -> \(hex(plan.target.address))"]
                               + (plan.originalPointerSymbol.map { ["\($0) = \(hex(plan.original.address)) (\(plan.original))"] } ?? []))
        }
    }
}

/// A patch's bytes before and after, each with its instructions (live and file patches alike).
func printBytes(original: [UInt8], _ originalInstructions: [Instruction], new: [UInt8], _ newInstructions: [Instruction]) {
    Output.line("original bytes: \(hexBytes(original))")
    for instruction in originalInstructions { Output.line("  \(hex(instruction.address))  \(instruction.text)") }
    Output.line("new bytes:      \(hexBytes(new))")
    for instruction in newInstructions { Output.line("  \(hex(instruction.address))  \(instruction.text)") }
}

func formatMilliseconds(_ ms: Double) -> String {
    let rounded = (ms * 1000).rounded() / 1000
    return "\(rounded) ms"
}
