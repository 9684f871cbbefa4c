import CGraftShim
import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// What graft needs to know of one instruction address, decoded once (the step loop's cache).
struct StepSite {
    enum Kind: UInt8 { case other, call, ret, jump, conditional, syscall, interrupt }
    let size: UInt8
    let kind: Kind
    /// `rep` string instruction: PTRACE_SINGLESTEP stops after each iteration with the pc unchanged.
    let rep: Bool
    /// Index into the profile's functions.
    let function: Int
    let text: String?
    /// `pushf`: it stores rflags — with the trap flag PTRACE_SINGLESTEP set — on the stack.
    var pushesFlags = false
    /// `popfq` (9d alone): emulated, never stepped (see `Stepper.emulatePopf`).
    var popsFlags = false
    static let unknown = StepSite(size: 0, kind: .other, rep: false, function: 0, text: nil)
}

/// Decoding and symbols for the stepper, cached by address: each pc is decoded once.
extension Stepper {
    func site(at pc: UInt64, host: some StepperHost) -> StepSite {
        if let known = sites[pc] { return known }
        var bytes = (try? host.tracee.readMemory(at: pc, count: 64)) ?? (try? host.tracee.readMemory(at: pc, count: 16)) ?? []
        // graft's own int3s are not the code: decode the bytes they replaced.
        host.breakpoints.putOriginalBytes(in: &bytes, at: pc)
        if let rearm = pendingRearm, rearm >= pc, rearm < pc &+ UInt64(bytes.count), let breakpoint = host.breakpoints[rearm] {
            bytes[Int(rearm - pc)] = breakpoint.originalByte
        }
        let decoded = bytes.isEmpty ? [] : host.disassembler.decode(bytes, at: pc, maxCount: 8)
        if decoded.first?.address != pc {
            let site = StepSite(size: 1, kind: .other, rep: false, function: functionIndex(at: pc, host: host),
                                text: options.disassemble ? "(bad)" : nil)
            sites[pc] = site
            return site
        }
        for instruction in decoded where sites[instruction.address] == nil {
            let kind: StepSite.Kind
            if instruction.isCall { kind = .call }
            else if instruction.isReturn { kind = .ret }
            else if instruction.isJump { kind = .jump }
            else if instruction.isConditionalBranch { kind = .conditional }
            else if instruction.isSyscall { kind = .syscall }
            else if instruction.isInterrupt { kind = .interrupt }
            else { kind = .other }
            sites[instruction.address] = StepSite(size: UInt8(instruction.size), kind: kind, rep: instruction.hasRepPrefix,
                                                  function: functionIndex(at: instruction.address, host: host),
                                                  text: options.disassemble ? instruction.text : nil,
                                                  pushesFlags: instruction.mnemonic.hasPrefix("pushf"),
                                                  popsFlags: instruction.bytes == [0x9d])
        }
        return sites[pc] ?? StepSite.unknown  // always there: the first decoded instruction is at pc
    }

    func functionIndex(at pc: UInt64, host: some StepperHost) -> Int {
        if let cached = functionIndexCache, pc >= cached.start, pc < cached.end { return cached.index }
        guard let resolved = host.index.symbolize(pc) else {
            // Memory no file backs (JIT code, the vDSO): one entry per mapping, named by the first
            // address seen in it.
            let mapping = host.index.mapping(containing: pc)
            let key = "@" + hex(mapping?.start ?? 0)
            if let known = unnamedCode[key] { return known }
            let index = profile.intern(TraceFunction(module: nil, name: nil, start: mapping == nil ? 0 : pc))
            unnamedCode[key] = index
            return index
        }
        let module = resolved.module?.name
        let moduleStart = resolved.module?.start ?? 0
        if let symbol = resolved.symbol, let start = resolved.symbolAddress {
            let index = profile.intern(TraceFunction(module: module, name: symbol.displayName, start: start, moduleStart: moduleStart))
            if symbol.size > 0 { functionIndexCache = (start, start &+ symbol.size, index) }
            return index
        }
        if let range = resolved.unnamedFunction {
            let index = profile.intern(TraceFunction(module: module, name: nil, start: range.start, moduleStart: moduleStart))
            functionIndexCache = (range.start, range.start &+ range.size, index)
            return index
        }
        // No symbol and no .eh_frame function: the module's unnamed code is one entry, named by the
        // first address the trace saw in it.
        let key = module ?? ""
        if let known = unnamedCode[key] { return known }
        let index = profile.intern(TraceFunction(module: module, name: nil, start: pc, moduleStart: moduleStart))
        unnamedCode[key] = index
        return index
    }
}
