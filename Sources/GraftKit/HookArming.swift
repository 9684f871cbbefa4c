import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// Arming: every hook resolved and checked, then the int3s written; return sites placed on demand.
extension HookEngine {
    // MARK: - Arming

    /// Resolves and checks every hook, then writes the int3s. Nothing is written unless every hook
    /// passes its checks.
    func arm() throws {
        var plans: [(hook: Int, breakpoint: Breakpoint, function: String)] = []
        if let watchSpec, let slots = debugSlots {
            let (watch, notice) = try planWatch(watchSpec)
            slots.watch = watch
            if let notice { armNotices.append(notice) }
        }
        let contents = try journal.load(ProcessInstance.current(tracee.pid))
        var kept: [HookSpec] = []
        for spec in specs {
            let breakpoint: Breakpoint, function: String
            do {
                (breakpoint, function) = try plan(spec, hook: kept.count, journal: contents)
            } catch let error as GraftError where spec.fromPattern && tracee.processDeath() == nil {
                skipped.append("\(spec.location) (\(HookEngine.shortReason(error)))")
                continue
            } catch GraftError.moduleNotFound(let module, let available) where !spec.fromPattern {
                // A library the process has not loaded yet: armed when it does (LibraryWait.swift).
                try checkCanWait(for: module, available: available)
                kept.append(spec)
                waitingHooks.append((kept.count - 1, module))
                continue
            }
            if let other = plans.first(where: { $0.breakpoint.address == breakpoint.address }) {
                if spec.fromPattern { continue }  // an alias of a function already hooked
                throw GraftError.usage("\(spec.location) and \(kept[other.hook].location) are the same address (\(hex(breakpoint.address))); hook it once")
            }
            kept.append(spec)
            plans.append((kept.count - 1, breakpoint, function))
        }
        let hadSpecs = !specs.isEmpty
        specs = kept
        if kept.isEmpty && hadSpecs {
            throw GraftError.usage("no function the patterns matched can take a hook: \(skipped.prefix(5).joined(separator: "; "))")
        }
        if debugSlots != nil {
            try armHardware(plans)
            return
        }
        stats = specs.map { HookStatistics(location: $0.location, function: "(not loaded yet)") }
        for (hook, breakpoint, function) in plans {
            try placeCopy(breakpoint, function: function, via: nil)
            breakpoints.insert(breakpoint)
            stats[hook] = HookStatistics(location: specs[hook].location, function: function)
            armed.append(armedHook(hook, breakpoint, function))
        }
        if !waitingHooks.isEmpty { try placeLoaderBreakpoint(contents: contents) }
        try breakpoints.writeAll(to: tracee)
    }

    /// What `.armed` says of a hook.
    func armedHook(_ hook: Int, _ breakpoint: Breakpoint, _ function: String) -> ArmedHook {
        ArmedHook(index: hook, location: specs[hook].location, function: function, address: breakpoint.address,
                  instruction: breakpoint.instruction.text,
                  strategy: breakpoint.slot != nil ? "out of line" : breakpoint.displaced.strategy)
    }

    /// Places the out-of-line copy a breakpoint's displaced instruction needs (mapped by thread `tid`,
    /// nil: any thread that can make a remote call).
    func placeCopy(_ breakpoint: Breakpoint, function: String, via tid: Int32?) throws {
        switch breakpoint.displaced {
        case .outOfLine:
            do {
                breakpoint.slot = try scratch.place(breakpoint.instruction, via: tid)
            } catch let error as GraftError {
                if let death = tracee.processDeath() { throw death }
                if case .hookRefused = error { throw error }
                throw GraftError.hookRefused(function: function, address: breakpoint.address,
                                             reason: "'\(breakpoint.instruction.text)' can only run out of line, from a scratch page graft maps in the process: \(error)")
            }
        case .push where stepper == nil:
            // A push could be emulated (rsp -= 8 and a POKEDATA of the register), but run from
            // a copy it costs nothing beyond the pc: per hit one PTRACE_POKEDATA and a whole
            // SETREGS fewer (~2.4 µs of ~16 µs). Emulated when no scratch page can be had (a
            // seccomp filter that would not allow the mmap: Tracee.remoteSyscall asks it first),
            // and while tracing (the stepped thread must not count the copy's jump back).
            breakpoint.slot = try? scratch.place(breakpoint.instruction, via: tid)
        default:
            break
        }
    }

    /// Why a pattern's function was skipped, in a few words.
    static func shortReason(_ error: GraftError) -> String {
        switch error {
        case .ifuncSymbol: return "an IFUNC"
        case .ifuncUnresolved: return "an IFUNC whose implementation graft could not learn"
        case .functionTooShort(_, let size, _): return "\(size) bytes long"
        case .hookRefused(_, _, let reason): return String(reason.prefix { $0 != ";" && $0 != ":" })
        default:
            let text = error.description
            return text.count > 80 ? String(text.prefix(80)) + "…" : text
        }
    }

    /// The checks of one hook: a function in an executable file mapping, an instruction boundary
    /// decoded from the function start, memory equal to the file, no graft patch there, and a first
    /// instruction graft can displace.
    func plan(_ spec: HookSpec, hook: Int, journal contents: JournalContents) throws -> (Breakpoint, String) {
        // Every thread is stopped: one of them may run an IFUNC's resolver (it takes no lock).
        let resolver = CodeSiteResolver(index: index, disassembler: disassembler, readMemory: { try self.tracee.readMemory(at: $0, count: $1) },
                                        callResolver: { [tracee] in try tracee.remoteCall($0, [$1], name: "the resolver of \($2)", timeout: 2) })
        let located = try resolver.locate(spec.location, use: "hooking")
        let resolved = located.resolved, start = located.start
        let function = resolved.description
        if let ifunc = located.ifunc {
            armNotices.append("\(ifunc) is an IFUNC: hooking the implementation this process uses, \(function) (\(located.ifuncSource ?? "the loader's choice"))")
        }
        // Code from the file (memory may hold a breakpoint), up to the hooked instruction + 15.
        let site = try resolver.decode(located, count: Int(max(located.symbol.size, resolved.address - start + 16)))
        let isGo = (try? located.module.elf())?.isGoProgram == true
        // A Go function's entry runs again after its stack grew (morestack copies the stack and
        // restarts the function) or after a preemption request: hooked there, one call would be two
        // hits. Past the stack check (as delve does) it is one, with rsp and the argument registers
        // still as at the entry.
        let goStackCheck = isGo && site.address == start ? Self.goStackCheckLength(site.instructions) : 0
        let address = site.address + UInt64(goStackCheck)
        let instruction = site.instructions[try site.instructionIndex(at: address, function: function)]
        if let patch = CodeSite.appliedPatch(in: contents, overlapping: address..<address + 1) {
            throw GraftError.hookRefused(function: function, address: address,
                                         reason: "graft patch \(patch.id) is applied there; hooks and patches do not overlap (run `graft unpatch -p \(tracee.pid) \(patch.id)` first)")
        }
        let displaced = X86DisplacedInstruction.classify(instruction)
        // A debug register (`--hardware`) changes no byte and displaces nothing: the code may differ
        // from the file (another tool's int3 around it, a checksummed mapping) and any instruction will do.
        if debugSlots == nil {
            let memory = try tracee.readMemory(at: address, count: instruction.size)
            guard memory == instruction.bytes else {
                let hint = memory.first == X86_64.int3 ? "an int3 is there: another debugger (or another graft hook session) has a breakpoint on it" : "the code in memory differs from the file"
                throw GraftError.unexpectedBytes(address: address, expected: instruction.bytes, found: memory, hint: hint)
            }
            if case .refused(let reason) = displaced {
                throw GraftError.hookRefused(function: function, address: address, reason: reason)
            }
        }
        let breakpoint = Breakpoint(address: address, originalByte: instruction.bytes[0], instruction: instruction,
                                    displaced: displaced, slot: nil, entryHook: hook)
        breakpoint.atFunctionEntry = address == start || goStackCheck > 0
            || (address == start + UInt64(X86_64.endbr64.count) && site.code.starts(with: X86_64.endbr64))
        // Go assembly functions keep ABI0 (arguments and results on the stack); .symtab names them `….abi0`.
        let isABI0 = isGo && located.symbol.name.hasSuffix(".abi0")
        breakpoint.goABI = breakpoint.atFunctionEntry && isGo && !isABI0
        breakpoint.stackArguments = breakpoint.atFunctionEntry && isABI0
        if goStackCheck > 0 { return (breakpoint, "\(function) (after the stack check)") }
        return (breakpoint, address == resolved.address ? function : "\(function) (after endbr64)")
    }

    /// The bytes of a Go function's stack-check prologue (`cmp rsp, [r14+0x10]; jbe morestack`, or
    /// `lea r12, [rsp-N]; cmp r12, [r14+0x10]; jbe …` for larger frames, `mov r12, rsp; sub r12, N;
    /// jb …; cmp r12, [r14+0x10]; jbe …` for frames past StackBig), 0 when it does not start with
    /// one. Only flags and r12 change in it: rsp, the return address at [rsp] and the argument
    /// registers are as at the entry after it.
    static func goStackCheckLength(_ instructions: [Instruction]) -> Int {
        func isGuardCompare(_ instruction: Instruction, _ register: String) -> Bool {
            instruction.mnemonic == "cmp" && instruction.operands == "\(register), qword ptr [r14 + 0x10]"
        }
        let first = instructions.prefix(3)
        if first.count >= 2, isGuardCompare(first[first.startIndex], "rsp"), first[first.startIndex + 1].mnemonic == "jbe" {
            return first.prefix(2).reduce(0) { $0 + $1.size }
        }
        if first.count == 3, first[first.startIndex].mnemonic == "lea", first[first.startIndex].operands.hasPrefix("r12, [rsp - "),
           isGuardCompare(first[first.startIndex + 1], "r12"), first[first.startIndex + 2].mnemonic == "jbe" {
            return first.reduce(0) { $0 + $1.size }
        }
        let huge = Array(instructions.prefix(5))
        if huge.count == 5, huge[0].mnemonic == "mov", huge[0].operands == "r12, rsp", huge[1].mnemonic == "sub",
           huge[1].operands.hasPrefix("r12, "), huge[2].mnemonic == "jb", isGuardCompare(huge[3], "r12"), huge[4].mnemonic == "jbe" {
            return huge.reduce(0) { $0 + $1.size }
        }
        return 0
    }

    /// Makes sure a return breakpoint sits at `address`; false when graft cannot put one there (the
    /// return is then not reported, and the user told once).
    func ensureReturnSite(_ address: UInt64, via tid: Int32, onEvent: (HookEvent) -> Void) throws -> Bool {
        try ensureReturnSite(address, via: tid, goABI: false, onEvent: onEvent)
    }

    /// `goABI`: the call is Go code's, so the site's pending calls are owned by goroutines (`returnOwner`).
    func ensureReturnSite(_ address: UInt64, via tid: Int32, goABI: Bool, onEvent: (HookEvent) -> Void) throws -> Bool {
        if debugSlots != nil { return try ensureHardwareReturnSite(address, thread: tid, goABI: goABI, onEvent: onEvent) }
        if let existing = breakpoints[address] {
            existing.isReturnSite = true
            existing.goABI = existing.goABI || goABI
            return true
        }
        if refusedReturnSites.contains(address) { return false }
        func refuse(_ why: String) -> Bool {
            refusedReturnSites.insert(address)
            onEvent(.notice("returns to \(hex(address)) are not reported: \(why)"))
            return false
        }
        guard let mapping = index.mapping(containing: address), mapping.executable else {
            return refuse("not in an executable mapping")
        }
        var code = (try? tracee.readMemory(at: address, count: 16)) ?? []
        guard !code.isEmpty else { return refuse("unreadable") }
        // Another breakpoint of ours in these bytes: decode the original byte.
        breakpoints.putOriginalBytes(in: &code, at: address)
        guard let instruction = disassembler.decodeOne(code, at: address) else { return refuse("the instruction there does not decode") }
        if code[0] == X86_64.int3 { return refuse("an int3 that is not graft's is there") }
        let displaced = X86DisplacedInstruction.classify(instruction)
        if case .refused(let reason) = displaced { return refuse(reason) }
        let breakpoint = Breakpoint(address: address, originalByte: code[0], instruction: instruction, displaced: displaced,
                                    slot: nil, entryHook: nil, isReturnSite: true)
        breakpoint.goABI = goABI  // a return into Go code: pending calls are the goroutine's
        if case .outOfLine = displaced {
            do {
                breakpoint.slot = try scratch.place(instruction, via: tid)
            } catch {
                return refuse("no scratch page for an out-of-line copy (\(error))")
            }
        }
        breakpoints.insert(breakpoint)
        try tracee.writeMemory(at: address, bytes: [X86_64.int3])
        return true
    }
}
