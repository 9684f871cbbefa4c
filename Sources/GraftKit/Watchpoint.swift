import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace
import Glibc

/// `graft watch`: a variable to watch with a data breakpoint.
public struct WatchSpec: Sendable, Equatable {
    /// A variable (`NAME`, `MODULE:NAME`, `NAME+OFFSET`) or `0xADDRESS`, as the user wrote it.
    public var location: String
    /// `.write` (default) or `.access` (reads too: x86 cannot watch reads alone).
    public var condition: DebugCondition
    /// 1, 2, 4 or 8; nil: the variable's size (the address's alignment for a bare address).
    public var length: Int?
    /// A stack trace with every access.
    public var backtrace: Bool

    public init(location: String, condition: DebugCondition = .write, length: Int? = nil, backtrace: Bool = false) {
        self.location = location
        self.condition = condition
        self.length = length
        self.backtrace = backtrace
    }
}

/// One write (or access) of a watched variable.
public struct WatchHit: Sendable {
    public let tid: Int32
    public let location: String
    public let address: UInt64
    public let length: Int
    /// The value before (as graft last saw it) and after the instruction.
    public let oldValue: UInt64
    public let newValue: UInt64
    /// Where the thread stopped: right after the instruction that accessed the variable.
    public let pc: UInt64
    /// That instruction (nil when it cannot be told: code without a symbol to decode from).
    public let instructionAddress: UInt64?
    public let instruction: String?
    /// `module!function+0xoff` of the instruction (of pc when it is not known).
    public let function: String
    public let backtrace: [BacktraceFrame]
    public let wallTime: UInt64
    public var changed: Bool { oldValue != newValue }
}

/// The watch as armed.
final class WatchState {
    let spec: WatchSpec
    let location: String
    /// `counter (price_service, 4 bytes)`.
    let variable: String
    let address: UInt64
    let length: Int
    var condition: DebugCondition { spec.condition }
    var slot = 0
    /// Its row in the session's statistics (the summary's hits).
    var statIndex = 0
    var lastValue: UInt64

    init(spec: WatchSpec, variable: String, address: UInt64, length: Int, value: UInt64) {
        self.spec = spec
        self.location = spec.location
        self.variable = variable
        self.address = address
        self.length = length
        self.lastValue = value
    }
}

extension HookEngine {
    /// Resolves the variable and checks what DR7 can watch there; reads its value.
    func planWatch(_ spec: WatchSpec) throws -> (WatchState, notice: String?) {
        let (address, name, size) = try resolveVariable(spec.location)
        guard let mapping = index.mapping(containing: address) else {
            throw GraftError.usage("\(spec.location) (\(hex(address))) is not mapped in process \(tracee.pid)")
        }
        if spec.condition == .write && !mapping.writable {
            throw GraftError.usage("\(spec.location) (\(hex(address))) is in a read-only mapping (\(mapping.permissions) \(mapping.path.isEmpty ? "anonymous" : mapping.path)): nothing can write it; --rw reports reads")
        }
        var notice: String?
        let length: Int
        if let asked = spec.length {
            length = asked
        } else if let size, [1, 2, 4, 8].contains(Int(size)), address % size == 0 {
            length = Int(size)
        } else {
            // The largest length the address is aligned to and the variable holds.
            let limit: UInt64 = size.map { min($0, 8) } ?? 8
            length = Self.watchLengths.first { UInt64($0) <= limit && address % UInt64($0) == 0 } ?? 1
            if let size, size > UInt64(length) {
                notice = "\(name) is \(size) bytes; a debug register watches at most 8 aligned bytes: watching its first \(length) (NAME+OFFSET --len N watches another part)"
            }
        }
        guard DebugControl.lengths.contains(length) else {
            throw GraftError.usage("--len \(length): a debug register watches 1, 2, 4 or 8 bytes")
        }
        guard address % UInt64(length) == 0 else {
            let fits = Self.watchLengths.first { address % UInt64($0) == 0 } ?? 1
            throw GraftError.usage("\(spec.location) (\(hex(address))) is not aligned to \(length) bytes: a debug register watches 1, 2, 4 or 8 bytes at an address that is a multiple of the length; use --len \(fits), or an aligned address")
        }
        let value = try readValue(at: address, length: length)
        let state = WatchState(spec: spec, variable: "\(name) (\(length) byte\(length == 1 ? "" : "s") at \(hex(address)))",
                               address: address, length: length, value: value)
        return (state, notice)
    }

    /// A data symbol (STT_OBJECT, or untyped: assembly labels), `NAME+OFFSET`, or an address:
    /// the runtime address, a printable name and the symbol's size (nil without one, or past an offset).
    func resolveVariable(_ text: String) throws -> (UInt64, String, UInt64?) {
        let location = try Location.parse(text)
        let offset = UInt64(location.offset)
        let moduleName: String?, name: String
        switch location.base {
        case .address(let base):
            let address = base &+ offset
            return (address, hex(address), nil)
        case .symbol(let module, let symbol):
            moduleName = module
            name = symbol
        }
        let modules = try moduleName.map { [try index.module(named: $0)] } ?? index.modules
        var found: [(module: LoadedModule, symbol: ELFSymbol)] = []
        var seen: Set<UInt64> = []
        for module in modules {
            guard let elf = try? module.elf() else { continue }
            for symbol in elf.definedSymbols(named: name) where symbol.kind == .object || symbol.kind == .other {
                if seen.insert(module.runtimeAddress(symbol)).inserted { found.append((module, symbol)) }
            }
        }
        guard var chosen = found.first else {
            if (try? index.resolve(Location(base: location.base))) != nil {
                throw GraftError.usage("\(name) is a function, not a variable: `graft watch` watches data (`graft hook` reports calls)")
            }
            var names: [String] = []
            for module in modules {
                if let elf = try? module.elf() { names += elf.definedSymbols { _ in true }.filter { $0.kind == .object }.map(\.name) }
            }
            throw GraftError.symbolNotFound(name: name, module: moduleName, suggestions: Suggestions.best(for: name, among: names))
        }
        if found.count > 1 {
            // A program's copy relocation: the executable holds the variable its libraries use.
            if let main = index.modules.first, let inMain = found.first(where: { $0.module === main }) {
                chosen = inMain
            } else {
                throw GraftError.ambiguousSymbol(name: name, candidates: found.map { "\($0.module.name):\(name)" })
            }
        }
        let address = chosen.module.runtimeAddress(chosen.symbol) &+ offset
        let size: UInt64? = chosen.symbol.size == 0 || offset >= chosen.symbol.size ? nil : chosen.symbol.size - offset
        let printed = "\(chosen.module.name)!\(name)" + (offset == 0 ? "" : "+\(hex(offset))")
        return (address, printed, size)
    }

    /// What a debug register watches, largest first.
    static let watchLengths = [8, 4, 2, 1]

    func readValue(at address: UInt64, length: Int) throws -> UInt64 {
        let bytes = try tracee.readMemory(at: address, count: length)
        var value: UInt64 = 0
        for (i, byte) in bytes.enumerated() { value |= UInt64(byte) << UInt64(8 * i) }
        return value
    }

    /// A data breakpoint fired on `tid`, stopped right after the instruction: report it.
    func watchHit(_ watch: WatchState, tid: Int32, pc: UInt64, onEvent: (HookEvent) -> Void) throws -> Bool {
        // DR6 keeps its bits until the next debug exception: clear them, so a later SIGTRAP of the
        // target's own is never taken for a hit.
        try tracee.setDebugRegister(6, to: 0, of: tid)
        guard !draining else { return false }
        count(watch.statIndex)
        let value = try readValue(at: watch.address, length: watch.length)
        let old = watch.lastValue
        watch.lastValue = value
        guard reportsCalls else { return false }
        let registers = try tracee.registers(of: tid)
        let writer = accessingInstruction(endingAt: pc, registers: registers)
        let function = index.symbolize(writer?.address ?? pc).map(\.description) ?? hex(writer?.address ?? pc)
        let frames = watch.spec.backtrace ? unwinder.backtrace(of: tid) : []
        onEvent(.watched(WatchHit(tid: tid, location: watch.location, address: watch.address, length: watch.length,
                                  oldValue: old, newValue: value, pc: pc, instructionAddress: writer?.address,
                                  instruction: writer?.text, function: function, backtrace: frames, wallTime: wallClock())))
        return true
    }

    /// The instruction that accessed the variable: x86 reports a data breakpoint after it, so it is
    /// the one ending at pc, found by decoding the function from its symbol (x86 cannot be decoded
    /// backwards). A `rep` string instruction with iterations left traps with pc still on it.
    func accessingInstruction(endingAt pc: UInt64, registers: Registers) -> Instruction? {
        if let here = try? tracee.readMemory(at: pc, count: 16), let current = disassembler.decodeOne(here, at: pc),
           current.mnemonic.hasPrefix("rep"), registers.rcx != 0 {
            return current
        }
        guard let resolved = index.symbolize(pc &- 1), let start = resolved.symbolAddress, pc > start, pc - start <= 65_536,
              var code = try? tracee.readMemory(at: start, count: Int(pc - start)) else { return nil }
        breakpoints.putOriginalBytes(in: &code, at: start)
        return disassembler.decode(code, at: start).first { $0.address &+ UInt64($0.size) == pc }
    }
}
