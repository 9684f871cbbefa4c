import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace

/// How a jump patch lets its replacement call the original: the instructions the jump overwrites
/// run from a trampoline near the function (`X86Relocator`), which jumps back after them, and the
/// replacement's library learns the trampoline's address through its data symbol
/// `graft_original_<replacement>` (include/graft.h declares it). Planned with the patch (every
/// refusal before anything is written), placed in the stop window.
public struct TrampolinePlan: Sendable {
    /// The instructions from the patch point on (the relocator takes what the jump needs).
    public let instructions: [Instruction]
    /// Bytes the jump overwrites.
    public let length: Int
    /// The `graft_original_<name>` pointer: its address, and `module!name`.
    public let pointerAddress: UInt64
    public let pointerSymbol: String
    /// Where the pointer goes back to after a revert: the original function, intact again (its
    /// entry, `endbr64` included).
    public let originalEntry: UInt64
    /// The trampoline: on its page when the page exists (`page`), else as it would be at the
    /// patch point itself (for `--dry-run` and the refusals: the real one differs only in its
    /// branch displacements).
    public let preview: X86Relocator.Trampoline
    /// The page graft mapped for it (nil until it exists) and what goes there: an island
    /// (`jmp [rip+0]` + the target, when the jump reaches the target through it), then the
    /// trampoline at `page + 16`.
    public let page: UInt64?
    public let island: UInt64?
    public let pageBytes: [UInt8]
    /// The trampoline's page goes within this range's reach (the function's module).
    public let near: Range<UInt64>
}

extension TrampolinePlan {
    /// This trampoline relocated to `page + trampolineOffset`, with the page's bytes (an island to
    /// `target` first when `island`).
    func placed(on page: UInt64, target: UInt64, island: Bool, function: String) throws -> TrampolinePlan {
        let relocated: X86Relocator.Trampoline
        do {
            relocated = try X86Relocator.relocate(instructions, length: length, to: page + TrampolineSite.trampolineOffset)
        } catch let refusal as X86Relocator.Refusal {
            throw GraftError.cannotRelocate(function: function, reason: refusal.description)
        }
        var bytes = island ? X86_64.jumpAbsolute(to: target) : []
        bytes += [UInt8](repeating: 0xcc, count: Int(TrampolineSite.trampolineOffset) - bytes.count) + relocated.bytes
        return TrampolinePlan(instructions: instructions, length: length, pointerAddress: pointerAddress, pointerSymbol: pointerSymbol,
                              originalEntry: originalEntry, preview: relocated, page: page, island: island ? page : nil,
                              pageBytes: bytes, near: near)
    }
}

extension PatchPlanner {
    /// The trampoline for a jump to `target`, when `target`'s module defines
    /// `graft_original_<target symbol>`; nil otherwise. Refuses a pointer that is not a writable
    /// 8-byte object, and an instruction that cannot move (named, with why).
    /// `graft_original_<target symbol>` in the target's module, if it defines one.
    static func originalPointer(of target: ResolvedLocation) -> ELFSymbol? {
        guard let targetModule = target.module, let symbol = target.symbol, let elf = try? targetModule.elf() else { return nil }
        return elf.definedSymbols(named: "graft_original_\(symbol.name)").first
    }

    /// `graft_original_<target>`'s address and `module!name` when the target's module defines it,
    /// refused unless it is a writable, aligned 8-byte object; nil when there is none. For every kind
    /// of redirection (jump, GOT slot, vtable slot): it needs only the process's mappings.
    static func checkedOriginalPointer(of target: ResolvedLocation, function: String, index: SymbolIndex) throws -> (UInt64, String)? {
        guard let targetModule = target.module, let symbol = target.symbol, let pointer = PatchPlanner.originalPointer(of: target) else { return nil }
        let pointerSymbol = "\(targetModule.name)!graft_original_\(symbol.name)"
        let pointerAddress = targetModule.runtimeAddress(pointer)
        if pointer.kind != .object || pointer.size != 8 {
            let what = pointer.kind == .function ? "a function" : pointer.kind == .object ? "an object of \(pointer.size) bytes" : "not a data object"
            throw GraftError.cannotRelocate(function: function, reason: "\(pointerSymbol) is \(what), not a pointer (declare it with GRAFT_ORIGINAL from include/graft.h)")
        }
        guard let mapping = index.mapping(containing: pointerAddress), mapping.writable, pointerAddress & 7 == 0 else {
            let where_ = index.mapping(containing: pointerAddress).map { "a \($0.permissions) mapping" } ?? "no mapping"
            throw GraftError.cannotRelocate(function: function, reason: "\(pointerSymbol) at \(hex(pointerAddress)) is not a writable pointer (it is in \(where_); a const pointer becomes read-only after relocation: declare it with GRAFT_ORIGINAL from include/graft.h)")
        }
        return (pointerAddress, pointerSymbol)
    }

    func planTrampoline(target: ResolvedLocation, overwritten instructions: [Instruction], length: Int,
                        function: String, address: UInt64, entry: UInt64, module: LoadedModule) throws -> TrampolinePlan? {
        guard let (pointerAddress, pointerSymbol) = try PatchPlanner.checkedOriginalPointer(of: target, function: function, index: index) else { return nil }
        // Relocated at the patch point itself for now: every refusal by name before anything is
        // written; `TrampolinePlan.placed(on:)` aims it once its page exists.
        let preview: X86Relocator.Trampoline
        do {
            preview = try X86Relocator.relocate(instructions, length: length, to: address)
        } catch let refusal as X86Relocator.Refusal {
            throw GraftError.cannotRelocate(function: function, reason: refusal.description)
        }
        return TrampolinePlan(instructions: instructions, length: length, pointerAddress: pointerAddress, pointerSymbol: pointerSymbol,
                              originalEntry: entry, preview: preview, page: nil, island: nil, pageBytes: [], near: module.start..<module.end)
    }
}

/// A trampoline placed in the target.
struct PlacedTrampoline {
    let trampoline: X86Relocator.Trampoline
    let page: UInt64
    /// The pointer's value before graft wrote it (put back if the patch fails).
    let previousPointer: UInt64
}

enum TrampolineSite {

    static let pageSize: UInt64 = 4096
    /// Where the trampoline starts on its page (the island, 14 bytes, comes first).
    static let trampolineOffset: UInt64 = 16

    /// Maps the page for a trampoline near `near` (the function's module) with one borrowed thread.
    static func mapPage(near: Range<UInt64>, function: String, tracee: Tracee, thread: Int32) throws -> UInt64 {
        try NearPageAllocator.mapPage(near: near, protection: 0x1 | 0x4, tracee: tracee, via: thread,
                                      purpose: "the trampoline of \(function)")
    }

    /// Writes the page's island and trampoline and points `graft_original_<name>` at the
    /// trampoline. In the stop window, before the jump is written.
    static func place(_ plan: TrampolinePlan, tracee: Tracee) throws -> PlacedTrampoline {
        guard let page = plan.page else { throw GraftError.usage("internal: a trampoline planned without its page") }
        try tracee.writeMemory(at: page, bytes: plan.pageBytes)
        let thread = try tracee.anyThread()
        let previous = try tracee.readWord(at: plan.pointerAddress, via: thread)
        try tracee.writeWord(plan.preview.address, at: plan.pointerAddress, via: thread)
        return PlacedTrampoline(trampoline: plan.preview, page: page, previousPointer: previous)
    }

    /// Undoes `place` (and `moveThreads`) after a failed patch; the page stays for the caller.
    static func remove(_ placed: PlacedTrampoline, pointer: UInt64, moved: [(tid: Int32, from: UInt64)], tracee: Tracee) {
        guard tracee.processDeath() == nil, let thread = try? tracee.anyThread() else { return }
        for (tid, from) in moved {
            guard var registers = try? tracee.registers(of: tid) else { continue }
            registers.rip = from
            try? tracee.setRegisters(registers, of: tid)
        }
        try? tracee.writeWord(placed.previousPointer, at: pointer, via: thread)
    }

    /// Moves every thread stopped at an instruction of the overwritten range (after its first byte)
    /// to the matching instruction of the trampoline: it goes on with the same state. A thread inside
    /// a system call whose restart would rewind into the range is refused (`threadInsidePatch`).
    /// Returns the moved threads and where each was.
    static func moveThreads(into trampoline: X86Relocator.Trampoline, range: Range<UInt64>, tracee: Tracee) throws -> [(tid: Int32, from: UInt64)] {
        // Every thread is checked before any is moved: a refusal leaves them all where they were.
        var moves: [(tid: Int32, registers: Registers, from: UInt64)] = []
        func inside(_ address: UInt64) -> Bool { address > range.lowerBound && address < range.upperBound }
        try tracee.forEachThreadID { tid in
            let pc = try tracee.programCounter(of: tid)
            guard inside(pc) || inside(pc &- 2) else { return }
            var registers = try tracee.registers(of: tid)
            let inSyscall = Int64(bitPattern: registers.origRax) >= 0
            if inSyscall && (inside(registers.rip) || inside(registers.rip &- 2)) { throw GraftError.threadInsidePatch(tid: tid, pc: registers.rip) }
            guard inside(registers.rip) else { return }
            guard let relocated = trampoline.relocated(registers.rip) else { throw GraftError.threadInsidePatch(tid: tid, pc: registers.rip) }
            let from = registers.rip
            registers.rip = relocated
            moves.append((tid, registers, from))
        }
        var moved: [(tid: Int32, from: UInt64)] = []
        for move in moves {
            try tracee.setRegisters(move.registers, of: move.tid)
            moved.append((move.tid, move.from))
        }
        return moved.sorted { $0.tid < $1.tid }
    }

    /// Why `range` (a trampoline's page, a library) is still in use: a thread's pc in it, a register
    /// or a word of a thread's stack (from rsp up, ≤ 1 MiB: conservative) pointing into it; nil
    /// when unused.
    static func user(of range: Range<UInt64>, tracee: Tracee) throws -> String? {
        let mappings = try ProcMaps.read(pid: tracee.pid)
        for tid in tracee.threadIDs {
            let registers = try tracee.registers(of: tid)
            if range.contains(registers.rip) { return "thread \(tid) is running in it (pc \(hex(registers.rip)))" }
            // A register holding an address in it: e.g. a replacement that loaded its
            // graft_original_ pointer and has not called it yet.
            for value in [registers.rax, registers.rbx, registers.rcx, registers.rdx, registers.rsi, registers.rdi, registers.rbp,
                          registers.r8, registers.r9, registers.r10, registers.r11, registers.r12, registers.r13, registers.r14,
                          registers.r15] where range.contains(value) {
                return "thread \(tid) holds \(hex(value)) in a register, an address in it"
            }
            if let found = try StoppedCode.stackWord(of: tid, rsp: registers.rsp, mappings: mappings, tracee: tracee, where: range.contains) {
                return "thread \(tid)'s stack holds \(hex(found.value)) at \(hex(found.at)), a return address into it"
            }
        }
        return nil
    }
}
