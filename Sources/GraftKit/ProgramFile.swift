import GraftCore
import GraftELF
import GraftMachine
import Glibc

/// The instruction set a function of a program file is written in: the file's architecture, and for
/// 32-bit ARM the mode its symbol names (bit 0 of a Thumb function's `st_value` is set).
public enum InstructionSet: String, Sendable, Codable, CaseIterable {
    case x86_64, i386, aarch64, arm, thumb

    public var architecture: Architecture {
        switch self {
        case .x86_64: return .x86_64
        case .i386: return .i386
        case .aarch64: return .aarch64
        case .arm, .thumb: return .arm32
        }
    }
}

/// A function of a program file, as `graft symbols --file` lists it and a file patch names it.
public struct FileFunction: Sendable {
    public let symbol: ELFSymbol
    /// The first instruction, link-time (a Thumb symbol's value without bit 0).
    public let address: UInt64
    public let instructionSet: InstructionSet
    public var size: UInt64 { symbol.size }
    public var name: String { symbol.displayName }
    /// What a jump to the function loads into the pc: the address, with bit 0 set for Thumb (an
    /// interworking load then runs it in Thumb state, from A32 code too).
    public var entryValue: UInt64 { instructionSet == .thumb ? address | 1 : address }
    public var range: Range<UInt64> { address..<(address + size) }
}

/// A program file (executable or shared object) opened for `graft patch --file`: its ELF, its
/// architecture, its functions, and their code decoded in the right disassembler mode.
public final class ProgramFile {
    public let path: String
    public let elf: ELFFile
    public let architecture: Architecture

    public init(path: String) throws {
        self.path = path
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw GraftError.fileRefused(path: path, reason: "cannot open it: \(Errno.describe(errno))")
        }
        elf = try ELFFile(path: path)
        switch (elf.machine, elf.is64Bit) {
        case (62, true): architecture = .x86_64
        case (183, true): architecture = .aarch64
        case (3, false): architecture = .i386
        case (40, false): architecture = .arm32
        default:
            throw GraftError.fileRefused(path: path, reason: "it is a \(elf.is64Bit ? 64 : 32)-bit \(LibraryFile.machineName(elf.machine)) file; graft patches x86_64, i386, ARM (A32 and Thumb-2) and AArch64 files")
        }
    }

    /// The instruction set of a function symbol.
    public func instructionSet(of symbol: ELFSymbol) -> InstructionSet {
        switch architecture {
        case .x86_64: return .x86_64
        case .i386: return .i386
        case .aarch64: return .aarch64
        case .arm32: return symbol.value & 1 == 1 ? .thumb : .arm
        }
    }

    func function(_ symbol: ELFSymbol) -> FileFunction {
        let isa = instructionSet(of: symbol)
        return FileFunction(symbol: symbol, address: isa == .thumb ? symbol.value & ~1 : symbol.value, instructionSet: isa)
    }

    /// Every function symbol, or those whose name (or demangled name) matches the fnmatch glob, by address.
    public func functions(matching pattern: String?) -> [FileFunction] {
        elf.functionSymbols.filter { symbol in
            guard let pattern else { return true }
            return fnmatch(pattern, symbol.name, 0) == 0 || (Demangler.isMangled(symbol.name) && fnmatch(pattern, SymbolNames.demangled(symbol.name), 0) == 0)
        }.map(function).sorted { $0.address != $1.address ? $0.address < $1.address : $0.symbol.name < $1.symbol.name }
    }

    /// The function a LOCATION names in this file: `NAME` (a source name of C++ too) or `0xADDRESS`,
    /// a function's first byte (link time). `NAME+OFFSET` and `MODULE:NAME` are for live patches.
    public func function(named text: String) throws -> FileFunction {
        let location = try Location.parse(text)
        guard location.offset == 0 else {
            throw GraftError.invalidLocation(text: text, reason: "a file patch goes at a function's entry, not NAME+OFFSET")
        }
        switch location.base {
        case .address(let given):
            // A Thumb function may be named with bit 0 set, as its symbol and a pointer to it carry it.
            let address = architecture == .arm32 ? given & ~1 : given
            let candidates = elf.functionSymbols.map(function).filter { $0.address == address && $0.size > 0 }
            guard let found = candidates.first else {
                let inside = elf.functionSymbols.map(function).first { $0.range.contains(address) }
                throw GraftError.fileRefused(path: path, reason: inside.map { "\(hex(address)) is inside \($0.name) (\(hex($0.address))..<\(hex($0.address + $0.size))), not a function's entry; a file patch goes at an entry" }
                                             ?? "no function symbol starts at \(hex(address)) (see `graft symbols --file \(path)`)")
            }
            return found
        case .symbol(let module?, _):
            throw GraftError.invalidLocation(text: text, reason: "MODULE:NAME (\(module)) names a module of a process; a file patch names a function of the file")
        case .symbol(nil, let name):
            var found = elf.symbols(named: name)
            if found.isEmpty { found = elf.demangledFunctions[name] ?? [] }
            if found.isEmpty {
                found = elf.demangledFunctions.filter { $0.key.hasPrefix(name + "(") }.flatMap(\.value)
                if Set(found.map(\.value)).count > 1 {
                    throw GraftError.ambiguousSymbol(name: name, candidates: found.map { SymbolNames.demangled($0.name) }.sorted())
                }
            }
            guard let symbol = found.first else {
                throw GraftError.symbolNotFound(name: name, module: path,
                                                suggestions: Suggestions.best(for: name, among: elf.functionSymbols.map(\.displayName)))
            }
            if symbol.kind == .ifunc {
                throw GraftError.fileRefused(path: path, reason: "\(name) is an IFUNC (STT_GNU_IFUNC): its code is the resolver the loader runs to choose an implementation, not what callers reach; patch the implementation by name")
            }
            return function(symbol)
        }
    }

    /// The bytes of `count` bytes at link-time `address`, from the file part of a `PT_LOAD` segment
    /// that is executable; the refusal says which it is not.
    func code(at address: UInt64, count: Int, function: String) throws -> [UInt8] {
        guard let segment = elf.loadSegments.first(where: { address >= $0.vaddr && address - $0.vaddr < $0.filesz }) else {
            throw GraftError.fileRefused(path: path, reason: "\(function) at \(hex(address)) is not in the file part of any loadable segment")
        }
        guard segment.executable else {
            throw GraftError.fileRefused(path: path, reason: "\(function) at \(hex(address)) is in a segment that is not executable")
        }
        guard let bytes = elf.bytes(atVirtualAddress: address, count: count) else {
            throw GraftError.fileRefused(path: path, reason: "\(function) (\(count) bytes at \(hex(address))) runs past the end of its segment in the file")
        }
        return bytes
    }

    /// The data inside `range` as the ARM ELF ABI's mapping symbols mark it: from each `$d` (data:
    /// literal pools) to the next `$a`/`$t`/`$x` (code) or the end of the range. Empty on x86.
    func dataRanges(in range: Range<UInt64>) -> [Range<UInt64>] {
        guard architecture == .arm32 || architecture == .aarch64 else { return [] }
        let markers = elf.definedSymbols { name in
            guard name.hasPrefix("$"), name.count >= 2 else { return false }
            let kind = name.dropFirst().prefix(1)
            return ["a", "t", "d", "x"].contains(kind) && (name.count == 2 || name.dropFirst(2).hasPrefix("."))
        }.map { (address: $0.value & ~1, isData: $0.name.hasPrefix("$d")) }
            .filter { range.contains($0.address) }
            .sorted { $0.address < $1.address }
        var result: [Range<UInt64>] = []
        for (index, marker) in markers.enumerated() where marker.isData {
            let end = markers[(index + 1)...].first(where: { !$0.isData })?.address ?? range.upperBound
            if end > marker.address { result.append(marker.address..<end) }
        }
        return result
    }

    /// A disassembler in the function's mode.
    func disassembler(for isa: InstructionSet) throws -> Disassembler {
        try Disassembler(isa.architecture, thumb: isa == .thumb)
    }

    /// `code` (at `address`) decoded in `isa`, data ranges shown as `.word` lines rather than decoded.
    /// `decodedEnd` is where decoding first failed outside data (the range's end when it never did).
    func decode(_ code: [UInt8], at address: UInt64, isa: InstructionSet, data: [Range<UInt64>])
        throws -> (lines: [Instruction], decodedEnd: UInt64) {
        let disassembler = try self.disassembler(for: isa)
        var lines: [Instruction] = []
        var cursor = address
        let end = address + UInt64(code.count)
        var decodedEnd: UInt64?
        while cursor < end {
            if let datum = data.first(where: { $0.contains(cursor) }) {
                let stop = min(datum.upperBound, end)
                var word = cursor
                while word < stop {
                    let size = Int(min(4, stop - word))
                    let bytes = Array(code[Int(word - address)..<Int(word - address) + size])
                    lines.append(Instruction(address: word, bytes: bytes, mnemonic: size == 4 ? ".word" : ".byte", operands: hex(littleEndianValue(bytes))))
                    word += UInt64(size)
                }
                cursor = stop
                continue
            }
            let stop = data.map(\.lowerBound).filter { $0 > cursor && $0 < end }.min() ?? end
            let piece = Array(code[Int(cursor - address)..<Int(stop - address)])
            let decoded = disassembler.decode(piece, at: cursor)
            lines += decoded
            let reached = decoded.last?.end ?? cursor
            if reached < stop {
                if decodedEnd == nil { decodedEnd = reached }
                break
            }
            cursor = stop
        }
        return (lines, decodedEnd ?? end)
    }
}
