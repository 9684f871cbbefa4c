import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace

/// What a patch puts at a function's entry.
public enum PatchAction: Sendable, Equatable {
    /// A jump to another function (a LOCATION: `NAME`, `MODULE:NAME`, `LOC+OFF`, `0xADDR`).
    case jump(to: String)
    /// A stub that returns this value at once (`mov eax/rax, imm; ret`).
    case returnValue(Int64)
}

/// A patch computed whole before anything is written: where, what was there, what will be, and why
/// it is safe. Produced by `Graft.preparePatch` without stopping the target.
public struct PatchPlan: Sendable {
    public let instance: ProcessInstance
    /// Where the new bytes go (after a kept `endbr64`).
    public let address: UInt64
    public let location: ResolvedLocation
    /// `module!function`.
    public let function: String
    public let functionStart: UInt64
    public let functionSize: UInt64
    public let modulePath: String
    public let buildID: String?
    public let action: PatchAction
    /// Jump target (for `.jump`).
    public let target: ResolvedLocation?
    public let originalBytes: [UInt8]
    public internal(set) var newBytes: [UInt8]
    /// The instructions the new bytes overwrite, whole (the last may extend past the new bytes).
    public let originalInstructions: [Instruction]
    public internal(set) var newInstructions: [Instruction]
    /// `jmp rel32`, `jmp [rip+0]`, or `return stub`.
    public let encoding: String
    public let keptEndbr64: Bool
    /// Return addresses of calls among the overwritten instructions that land inside the new bytes:
    /// a thread inside such a call would return into the middle of the patch.
    public let returnAddressesInside: [UInt64]
    /// The checks that passed, in order, for `--dry-run` and the JSON output.
    public let checks: [String]
    /// A jump whose target's library defines `graft_original_<target>`: the trampoline that lets
    /// it call the original.
    public internal(set) var trampoline: TrampolinePlan?
    /// The library `--library` named (its path), when the target is in it, and its record.
    public var library: String? = nil
    public var libraryRecord: LibraryRecord? = nil

    public var range: Range<UInt64> { address..<(address + UInt64(newBytes.count)) }

    /// The same plan with its trampoline's page mapped at `page`: the jump's bytes (to the island on
    /// the page, or straight to the target when it is in reach) and the trampoline relocated there.
    /// Pure: every check was made by the planner; only displacements change.
    func onTrampolinePage(_ page: UInt64, disassembler: Disassembler) throws -> PatchPlan {
        guard let planned = trampoline, let target else { return self }
        var plan = self
        let island = encoding.hasPrefix("jmp rel32 to an island")
        if island {
            guard let jump = X86_64.jumpRel32(from: address, to: page), jump.count == newBytes.count else {
                throw GraftError.hookRefused(function: function, address: address, reason: "the trampoline's page at \(hex(page)) is out of reach of a 5-byte jump")
            }
            plan.newBytes = jump
            plan.newInstructions = disassembler.decode(jump, at: address, maxCount: 1)
        }
        plan.trampoline = try planned.placed(on: page, target: target.address, island: island, function: function)
        return plan
    }
}

/// The outcome of `Graft.patch`.
public struct PatchOutcome: Sendable {
    public let plan: PatchPlan
    public let record: PatchRecord?
    public let dryRun: Bool
    /// Threads that were single-stepped out of the overwritten bytes before the write.
    public let steppedThreads: [Int32]
    public let threadCount: Int
    /// How long the target was stopped (first PTRACE_SEIZE to last PTRACE_DETACH), 0 for a dry run.
    public let stopWindowNanoseconds: UInt64
    /// The trampoline graft placed (a jump whose target defines `graft_original_<name>`).
    public var trampoline: X86Relocator.Trampoline? = nil
    /// Threads moved from the overwritten bytes to the matching instruction of the trampoline.
    public var movedThreads: [Int32] = []
    /// How long one thread was borrowed (stopped alone, the others running) to load the library
    /// and map the trampoline's page, before the stop window; 0 for a patch without either.
    public var borrowedThreadNanoseconds: UInt64 = 0
}

/// Computes a `PatchPlan`: every check that can be made from the ELF file and a read of memory.
struct PatchPlanner {
    let instance: ProcessInstance
    let index: SymbolIndex
    let journal: JournalContents
    let disassembler: Disassembler
    let readMemory: (UInt64, Int) throws -> [UInt8]

    /// Accept a LOCATION inside the function after the stack pointer moved (`--mid-function`).
    var allowMidFunction = false
    /// Named in the hint when memory holds what looks like another journal's patch.
    var journalDirectory = ""

    /// Runs an IFUNC's resolver in the target when nothing else tells its implementation.
    var callResolver: IFUNCResolverCall? = nil

    var resolver: CodeSiteResolver {
        CodeSiteResolver(index: index, disassembler: disassembler, readMemory: readMemory, callResolver: callResolver)
    }

    func plan(location text: String, action: PatchAction) throws -> PatchPlan {
        let located = try resolver.locate(text, use: "patching")
        let resolved = located.resolved, module = located.module, symbol = located.symbol, start = located.start
        let function = located.function
        guard symbol.size > 0 else {
            throw GraftError.functionTooShort(function: function, size: 0, needed: X86_64.rel32JumpLength)
        }
        var checks: [String] = []
        if let ifunc = located.ifunc {
            checks.append("\(ifunc) is an IFUNC: graft patches the implementation this process's calls reach, \(function) at \(hex(start)) (\(located.ifuncSource ?? "the loader's choice"))")
        }
        checks.append("\(hex(resolved.address)) is in an executable file mapping (\(module.name))")

        // Decode the pristine code from the file; memory may hold someone's breakpoint.
        let site = try resolver.decode(located, count: Int(symbol.size))
        let instructions = site.instructions, decodedEnd = site.decodedEnd
        let address = site.address, keptEndbr64 = site.keptEndbr64
        if keptEndbr64 { checks.append("endbr64 at the entry is kept; the patch starts after it") }
        guard address < start + symbol.size else {
            throw GraftError.pastFunctionEnd(address: address, function: function, start: start, size: symbol.size)
        }
        let boundaryIndex = try site.instructionIndex(at: address, function: function)
        checks.append("\(hex(address)) is an instruction boundary (decoded from the start of \(function))")
        // A `.cold` part (gcc's split-off unlikely code) is jumped to from inside its parent, in the
        // parent's frame: a stub or a jump there returns through the parent's saved registers.
        if symbol.name.contains(".cold"), !allowMidFunction {
            let parent = symbol.name.split(separator: ".", omittingEmptySubsequences: false).prefix { $0 != "cold" }.joined(separator: ".")
            throw GraftError.coldPart(function: function, parent: parent)
        }
        if resolved.address != start {
            // Inside the function: the stub's `ret` (or the target's) must find the caller's
            // return address at rsp, so nothing before this point may have moved rsp — nor may a
            // branch come back here from code after a stack change.
            if let changer = PatchPlanner.stackChanger(before: boundaryIndex, in: instructions) {
                if !allowMidFunction {
                    throw GraftError.stackChangedBeforePatch(location: resolved.description, function: function, instruction: changer.text,
                                                             at: changer.address, jump: { if case .jump = action { return true } else { return false } }())
                }
                checks.append("--mid-function: '\(changer.text)' at \(hex(changer.address)) moves the stack before \(hex(address)); patched anyway")
            } else {
                checks.append("nothing in \(function) before \(hex(address)) moves the stack pointer")
            }
        }

        // The new bytes.
        var target: ResolvedLocation?
        let newBytes: [UInt8]
        let encoding: String
        switch action {
        case .jump(let targetText):
            let resolvedTarget = try index.resolve(try Location.parse(targetText))
            try resolver.requireExecutable(resolvedTarget.address, asTarget: true)
            if let check = try checkJumpTarget(resolvedTarget) { checks.append(check) }
            target = resolvedTarget
            if let rel = X86_64.jumpRel32(from: address, to: resolvedTarget.address) {
                newBytes = rel
                encoding = "jmp rel32"
            } else if PatchPlanner.originalPointer(of: resolvedTarget) != nil {
                // A far library with a trampoline: `jmp rel32` to an island on the trampoline's page
                // (near the function), which holds `jmp [rip+0]` + the target. 5 bytes, not 14.
                // The page does not exist yet: a jump of the same length (`onTrampolinePage` aims it).
                newBytes = X86_64.jumpRel32(from: address, to: address) ?? X86_64.jumpAbsolute(to: resolvedTarget.address)
                encoding = newBytes.count == 5 ? "jmp rel32 to an island (jmp [rip+0])" : "jmp [rip+0]"
            } else {
                newBytes = X86_64.jumpAbsolute(to: resolvedTarget.address)
                encoding = "jmp [rip+0]"
            }
            checks.append("the target \(resolvedTarget) is executable")
        case .returnValue(let value):
            newBytes = X86_64.returnStub(value)
            encoding = "return stub"
        }

        let end = address + UInt64(newBytes.count)
        let available = Int(start + symbol.size - address)
        guard newBytes.count <= available else {
            throw GraftError.functionTooShort(function: function, size: available, needed: newBytes.count)
        }
        checks.append("\(function) has \(available) bytes from the patch point; the patch needs \(newBytes.count)")
        guard end <= decodedEnd else {
            throw GraftError.undecodableInstruction(address: decodedEnd, function: function)
        }

        // No branch of the function may land inside the new bytes (the entry itself is fine).
        for instruction in instructions {
            if let branch = instruction.branchTarget, branch > address, branch < end {
                throw GraftError.branchIntoPatch(from: instruction.address, to: branch, function: function)
            }
        }
        checks.append("no branch in \(function) lands inside \(hex(address))..<\(hex(end))")

        let overwritten = Array(instructions[boundaryIndex...].prefix(while: { $0.address < end }))
        var trampoline: TrampolinePlan?
        if let target {
            trampoline = try planTrampoline(target: target, overwritten: Array(instructions[boundaryIndex...]), length: newBytes.count,
                                            function: function, address: address, entry: keptEndbr64 ? start : address, module: module)
            if let trampoline {
                checks.append("\(trampoline.pointerSymbol) is a writable pointer; the overwritten instructions relocate into a trampoline (\(trampoline.preview.movedLength) bytes moved) that jumps back to \(hex(trampoline.preview.resumeAddress))")
            }
        }
        let returnsInside = overwritten.filter { $0.isCall && $0.end > address && $0.end < end }.map(\.end)
        // A jump into its own bytes (or into the tail of an instruction they cut) hangs or crashes.
        if let target {
            // A kept endbr64 runs straight into the jump: jumping to it is jumping to the jump.
            let damaged = (keptEndbr64 ? start : address)..<max(end, overwritten.last?.end ?? end)
            if damaged.contains(target.address) {
                throw GraftError.targetInsidePatch(target: target.description, start: damaged.lowerBound, end: damaged.upperBound)
            }
        }

        // The bytes in memory must be the file's (or, without the file, what we decoded).
        let found = try readMemory(address, newBytes.count)
        let expected = site.fileBytes(at: address, count: newBytes.count) ?? found
        if let record = CodeSite.appliedPatch(in: journal, overlapping: address..<end) {
            throw GraftError.alreadyPatched(address: record.addressValue, id: record.id, function: record.function, pid: instance.pid)
        }
        if found != expected {
            throw GraftError.unexpectedBytes(address: address, expected: expected, found: found, hint: unexpectedBytesHint(found, at: address))
        }
        checks.append(site.fileCode != nil ? "the bytes in memory equal the file's" : "the file could not be read; memory bytes taken as the original")

        return PatchPlan(
            instance: instance, address: address, location: resolved, function: function,
            functionStart: start, functionSize: symbol.size, modulePath: module.path,
            buildID: site.elf?.buildID, action: action, target: target, originalBytes: found, newBytes: newBytes,
            originalInstructions: overwritten, newInstructions: disassembler.decode(encoding == "jmp [rip+0]" ? Array(newBytes.prefix(6)) : newBytes, at: address, maxCount: encoding.hasPrefix("jmp rel32") ? 1 : 2),
            encoding: encoding, keptEndbr64: keptEndbr64, returnAddressesInside: returnsInside, checks: checks, trampoline: trampoline)
    }

    /// The first instruction that moves rsp on the way to `instructions[index]` from the function's
    /// entry: before it, or after it up to the last branch that comes back to it (that branch may
    /// come from code after a stack change). ret and call do not count (they return to the point).
    static func stackChanger(before index: Int, in instructions: [Instruction]) -> Instruction? {
        let address = instructions[index].address
        let lastBranchBack = instructions.last { $0.branchTarget == address && $0.address >= address }?.address ?? address
        return instructions[..<index].first(where: \.changesStackPointer)
            ?? instructions[index...].prefix { $0.address < lastBranchBack }.first(where: \.changesStackPointer)
    }

    /// A `--to` target inside a function symbol gets the LOCATION's checks: not an IFUNC, an
    /// instruction boundary, and (unless `--mid-function`) no stack change before it and not a
    /// `.cold` part. An address outside any function symbol is taken as it is (JIT code, a stub).
    /// Returns the line for the plan's checks.
    private func checkJumpTarget(_ target: ResolvedLocation) throws -> String? {
        guard let module = target.module, let symbol = target.symbol, let start = target.symbolAddress else { return nil }
        let function = "\(module.name)!\(symbol.displayName)"
        if symbol.kind == .ifunc { throw GraftError.ifuncSymbol(function: function, use: "jumping to", pid: index.pid) }
        if symbol.name.contains(".cold") {
            if !allowMidFunction {
                throw GraftError.targetMidFunction(target: target.description, reason: "it is in a part of a function the compiler split off (.cold), entered by a jump inside its parent's frame")
            }
            return "--mid-function: the target \(target) is in a .cold part; jumped to anyway"
        }
        guard target.address != start else { return nil }
        // Past the symbol's end (or, for a symbol without a size, absurdly far: the decode below
        // would read that much): the named function is not where the target is.
        if symbol.size > 0 ? target.address >= start + symbol.size : target.address - start > 1 << 16 {
            throw GraftError.pastFunctionEnd(address: target.address, function: function, start: start, size: symbol.size)
        }
        let size = Int(max(symbol.size, target.address - start + 16))
        let code = try (try? module.elf())?.bytes(atVirtualAddress: module.linkAddress(start), count: size) ?? readMemory(start, size)
        let instructions = disassembler.decode(code, at: start)
        let index = try CodeSite.instructionIndex(at: target.address, in: instructions, function: function, start: start)
        if let changer = PatchPlanner.stackChanger(before: index, in: instructions) {
            if !allowMidFunction {
                throw GraftError.targetMidFunction(target: target.description, reason: "'\(changer.text)' at \(hex(changer.address)) in \(function) moves the stack pointer before that point")
            }
            return "--mid-function: '\(changer.text)' at \(hex(changer.address)) moves the stack before the target \(target); jumped to anyway"
        }
        return "the target \(target) is an instruction boundary and nothing in \(function) before it moves the stack pointer"
    }

    /// Why memory may differ from the file: a debugger's int3, a jump or a return stub such as graft
    /// writes (then perhaps graft's own patch, recorded in another journal directory: root's and a
    /// user's differ), or some other tool.
    private func unexpectedBytesHint(_ found: [UInt8], at address: UInt64) -> String {
        let first = disassembler.decode(found, at: address, maxCount: 2)
        let graftLike: String? = {
            guard let instruction = first.first else { return nil }
            if instruction.isJump {
                let target = instruction.branchTarget.flatMap { index.symbolize($0) }.map { " to \($0)" } ?? ""
                return "a jump\(target)"
            }
            if first.count == 2, first[1].isReturn, instruction.mnemonic == "mov" || instruction.mnemonic == "xor" || instruction.mnemonic == "movabs",
               instruction.operands.hasPrefix("eax") || instruction.operands.hasPrefix("rax") {
                return "a return stub ('\(instruction.text); ret')"
            }
            return nil
        }()
        if let graftLike {
            return "\(graftLike) is there, as graft writes: if it is a graft patch recorded in another journal directory (this one is \(journalDirectory); root uses /run/graft, other users $XDG_RUNTIME_DIR/graft or ~/.local/state/graft), run `graft list`/`unpatch` with that --state-dir; graft patches only pristine code"
        }
        if found.contains(X86_64.int3) {
            // Name whoever traces the process: the breakpoint is most likely theirs (a graft hook
            // session, gdb).
            if let thread = ProcFS.status(instance.pid)?["TracerPid"].flatMap({ Int32($0) }), thread > 0 {
                let tracer = ProcFS.threadGroup(of: thread)
                return "a breakpoint (int3) is set here, and process \(instance.pid) is traced by \(tracer) (\(ProcFS.commandName(tracer))): end that session first"
            }
            return "a debugger breakpoint (int3) seems to be set here; remove it first"
        }
        return "another tool changed this code since it was loaded; graft patches only pristine code"
    }
}
