import GraftCore

/// A range of a file's memory image at link time: a segment (`p_vaddr`, `p_memsz`) or an array
/// named by the dynamic section (`DT_INIT_ARRAY`, `DT_INIT_ARRAYSZ`).
public struct ELFRange: Sendable, Equatable, CustomStringConvertible {
    public let vaddr: UInt64
    public let size: UInt64

    public init(vaddr: UInt64, size: UInt64) {
        self.vaddr = vaddr
        self.size = size
    }

    /// One past the last byte; nil if that does not fit in 64 bits (a malformed file).
    public var end: UInt64? {
        let (end, overflow) = vaddr.addingReportingOverflow(size)
        return overflow ? nil : end
    }

    public var description: String { "\(hex(vaddr))..<\(end.map(hex) ?? "2^64")" }
}

/// One `Elf64_Rela` entry of a file's dynamic relocation tables (`DT_RELA` or `DT_JMPREL`).
public struct ELFRelocation: Sendable, Equatable, CustomStringConvertible {
    /// The `.dynsym` entry a relocation names (`ELF64_R_SYM(r_info)` != 0).
    public struct Symbol: Sendable, Equatable {
        public let name: String
        /// Defined in this file (`st_shndx` != `SHN_UNDEF`); then `value` is its link-time address.
        public let isDefined: Bool
        /// `SHN_ABS`: `value` is an absolute number, not an address that moves with the load bias.
        public let isAbsolute: Bool
        public let value: UInt64
        public let kind: SymbolKind
        /// `STB_WEAK`: an undefined weak reference that nothing defines resolves to 0.
        public let isWeak: Bool
    }

    /// `r_offset`: the link-time address the relocation writes.
    public let offset: UInt64
    /// `ELF64_R_TYPE(r_info)`: `R_X86_64_RELATIVE` = 8, …
    public let type: UInt32
    /// `ELF64_R_SYM(r_info)`: the `.dynsym` index, 0 for none.
    public let symbolIndex: UInt32
    public let symbol: Symbol?
    /// `r_addend`.
    public let addend: Int64
    /// From `DT_JMPREL` (the PLT's GOT slots) rather than `DT_RELA`.
    public let isPLT: Bool

    public var symbolName: String? { symbol?.name }

    /// A GOT slot the loader fills with a symbol's address: `R_X86_64_GLOB_DAT` (`.rela.dyn`) or
    /// `R_X86_64_JUMP_SLOT` (`.rela.plt`).
    public var isGOTSlot: Bool { type == 6 || type == 7 }

    /// A GOT slot through which this file imports `name` (a symbol it does not define itself).
    public func isImportSlot(of name: String) -> Bool { isGOTSlot && symbolName == name && symbol?.isDefined != true }

    /// `R_X86_64_RELATIVE`, or `relocation type N` for a type without a name here. Names are
    /// x86_64's: the only machine whose libraries graft relocates.
    public var typeName: String { Self.x86_64Names[type].map { "R_X86_64_" + $0 } ?? "relocation type \(type)" }

    public var description: String {
        let target = symbol.map { " \($0.name)" } ?? ""
        return "\(typeName) at \(hex(offset))\(target) + \(addend)"
    }

    static let x86_64Names: [UInt32: String] = [
        0: "NONE", 1: "64", 2: "PC32", 3: "GOT32", 4: "PLT32", 5: "COPY", 6: "GLOB_DAT", 7: "JUMP_SLOT",
        8: "RELATIVE", 9: "GOTPCREL", 10: "32", 11: "32S", 12: "16", 13: "PC16", 14: "8", 15: "PC8",
        16: "DTPMOD64", 17: "DTPOFF64", 18: "TPOFF64", 19: "TLSGD", 20: "TLSLD", 21: "DTPOFF32",
        22: "GOTTPOFF", 23: "TPOFF32", 24: "PC64", 25: "GOTOFF64", 26: "GOTPC32", 32: "SIZE32",
        33: "SIZE64", 34: "GOTPC32_TLSDESC", 36: "TLSDESC", 37: "IRELATIVE",
    ]
}

/// What a file's `PT_DYNAMIC` and a few program headers say about loading it: the libraries it
/// needs, its relocations, its initializers, TLS and RELRO. What a loader (ld.so, or graft mapping a
/// self-contained library itself) reads before it maps anything. Empty for a file without
/// `PT_DYNAMIC` (a static executable), except for the program headers' parts.
public struct ELFDynamic: Sendable, Equatable {
    /// The file has a `PT_DYNAMIC` segment.
    public var hasDynamicSegment = false
    /// `DT_NEEDED`: the libraries it needs, in order (`libc.so.6`).
    public var needed: [String] = []
    /// `DT_SONAME`.
    public var soname: String?
    /// `PT_INTERP`: the program interpreter a program asks for (`/lib64/ld-linux-x86-64.so.2`).
    public var interpreter: String?
    /// The entries of `DT_RELA`, then those of `DT_JMPREL`.
    public var relocations: [ELFRelocation] = []
    /// `DT_RELA` / `DT_RELASZ`, and `DT_RELAENT`.
    public var relaTable: ELFRange?
    public var relaEntrySize: UInt64?
    /// `DT_JMPREL` / `DT_PLTRELSZ`, and `DT_PLTREL` (7 = `DT_RELA`, 17 = `DT_REL`).
    public var pltRelocationTable: ELFRange?
    public var pltRelocationKind: UInt64?
    /// `DT_REL` (relocations without addends: not x86_64's) and `DT_RELR` (packed relative
    /// relocations, `ld -z pack-relative-relocs`) are present. Their entries are not parsed.
    public var hasRelTable = false
    public var hasRelrTable = false
    /// `DT_INIT`, `DT_INIT_ARRAY`/`DT_INIT_ARRAYSZ` (link time); `DT_FINI`, `DT_FINI_ARRAY`.
    public var initFunction: UInt64?
    public var initArray: ELFRange?
    public var finiFunction: UInt64?
    public var finiArray: ELFRange?
    /// `DT_FLAGS` (`DF_TEXTREL` = 4, `DF_BIND_NOW` = 8) and `DT_FLAGS_1` (`DF_1_NOW` = 1), 0 when absent.
    public var flags: UInt64 = 0
    public var flags1: UInt64 = 0
    /// `DT_TEXTREL` or `DF_TEXTREL`: relocations write into read-only segments.
    public var hasTextRelocations = false
    /// `PT_TLS`: thread-local storage (its template), which only a loader that sets up TLS can serve.
    public var tls: ELFRange?
    /// `PT_GNU_RELRO`: made read-only once relocated.
    public var relro: ELFRange?
}

extension ELFFile {
    /// `EI_CLASS`: 2 (`ELFCLASS64`) or 1 (`ELFCLASS32`).
    public var elfClass: UInt8 { is64Bit ? 2 : 1 }
    /// `EI_OSABI`: 0 (`ELFOSABI_SYSV`) or 3 (`ELFOSABI_GNU`, when the file uses GNU extensions).
    public var osabi: UInt8 { reader.u8(7) }
    /// `e_type`: 2 = `ET_EXEC`, 3 = `ET_DYN` (shared object or PIE).
    public var fileType: UInt16 { reader.u16(16) }

    /// Parses `PT_DYNAMIC` (and `PT_INTERP`, `PT_TLS`, `PT_GNU_RELRO`). Addresses in the dynamic
    /// section are link-time addresses, found in the file through the `PT_LOAD` segments; anything
    /// out of bounds or inconsistent is an `elfFormat` error, never a trap.
    /// 64-bit files only: graft maps and relocates x86_64 libraries, nothing 32-bit.
    public func dynamicInfo() throws -> ELFDynamic {
        guard is64Bit else { throw GraftError.elfFormat(path: path, reason: "32-bit ELF (ELFCLASS32): graft reads the dynamic section of 64-bit files only") }
        return try DynamicParser(file: self, reader: reader).parse()
    }
}

/// The parsing behind `ELFFile.dynamicInfo()`.
private struct DynamicParser {
    let file: ELFFile
    let reader: Reader

    func parse() throws(GraftError) -> ELFDynamic {
        let header = try Reader.parseHeader(reader)
        let programHeaders = try reader.programHeaders(header)
        var info = ELFDynamic()
        for ph in programHeaders {
            switch ph.type {
            case 3:   // PT_INTERP
                try reader.check(ph.offset, ph.filesz, "PT_INTERP")
                info.interpreter = reader.string(tableOffset: Int(ph.offset), tableSize: Int(ph.filesz), index: 0) ?? ""
            case 7:   // PT_TLS
                info.tls = ELFRange(vaddr: ph.vaddr, size: ph.memsz)
            case 0x6474_e552:   // PT_GNU_RELRO
                info.relro = ELFRange(vaddr: ph.vaddr, size: ph.memsz)
            default:
                break
            }
        }
        guard let dynamic = programHeaders.first(where: { $0.type == 2 }) else { return info }
        info.hasDynamicSegment = true
        try reader.check(dynamic.offset, dynamic.filesz, "PT_DYNAMIC")

        var values: [Int64: UInt64] = [:]   // the last value of each tag but DT_NEEDED
        var neededOffsets: [UInt64] = []
        for i in 0..<Int(dynamic.filesz / 16) {
            let o = Int(dynamic.offset) + i * 16
            let tag = Int64(bitPattern: reader.u64(o)), value = reader.u64(o + 8)
            if tag == 0 { break }   // DT_NULL
            if tag == 1 { neededOffsets.append(value) } else { values[tag] = value }
        }

        // Strings: DT_STRTAB / DT_STRSZ.
        var strings: (offset: Int, size: Int)?
        if let address = values[5] {
            let size = values[10] ?? 0
            let offset = try fileRange(address, size, "DT_STRTAB")
            strings = (Int(offset), Int(size))
        }
        func string(_ index: UInt64, _ what: String) throws(GraftError) -> String {
            guard let strings, index < UInt64(strings.size),
                  let text = reader.string(tableOffset: strings.offset, tableSize: strings.size, index: Int(index)) else {
                throw reader.fail("\(what) names string \(index), which is not in DT_STRTAB")
            }
            return text
        }
        info.needed = try neededOffsets.map { offset throws(GraftError) in try string(offset, "DT_NEEDED") }
        if let offset = values[14] { info.soname = try string(offset, "DT_SONAME") }

        info.initFunction = values[12]
        info.finiFunction = values[13]
        if let address = values[25] { info.initArray = ELFRange(vaddr: address, size: values[27] ?? 0) }
        if let address = values[26] { info.finiArray = ELFRange(vaddr: address, size: values[28] ?? 0) }
        info.flags = values[30] ?? 0
        info.flags1 = values[0x6fff_fffb] ?? 0
        info.hasTextRelocations = values[22] != nil || info.flags & 4 != 0
        info.hasRelTable = values[17] != nil
        info.hasRelrTable = values[36] != nil

        if let entrySize = values[11], entrySize != 24 {
            throw reader.fail("DT_SYMENT is \(entrySize), not 24")
        }
        let symbols = try values[6].map { address throws(GraftError) in try fileRange(address, 24, "DT_SYMTAB") }
        if let address = values[7] {
            let size = values[8] ?? 0, entrySize = values[9] ?? 24
            guard entrySize == 24 else { throw reader.fail("DT_RELAENT is \(entrySize), not 24") }
            info.relaTable = ELFRange(vaddr: address, size: size)
            info.relaEntrySize = entrySize
            info.relocations += try relocations(address, size, plt: false, symbols: symbols, strings: strings)
        }
        if let address = values[23] {
            let size = values[2] ?? 0, kind = values[20] ?? 7
            info.pltRelocationTable = ELFRange(vaddr: address, size: size)
            info.pltRelocationKind = kind
            // DT_REL entries are 16 bytes without addends: parsed as RELA they would be garbage.
            if kind == 7 {
                info.relocations += try relocations(address, size, plt: true, symbols: symbols, strings: strings)
            }
        }
        return info
    }

    /// The file offset of `[address, address + size)` (link time), which must start in the file part
    /// of a `PT_LOAD` and end inside the file.
    private func fileRange(_ address: UInt64, _ size: UInt64, _ what: String) throws(GraftError) -> UInt64 {
        guard let offset = file.fileOffset(forVirtualAddress: address) else {
            throw reader.fail("\(what) at \(hex(address)) is not in the file part of any PT_LOAD segment")
        }
        try reader.check(offset, size, what)
        return offset
    }

    private func relocations(_ address: UInt64, _ size: UInt64, plt: Bool, symbols: UInt64?,
                             strings: (offset: Int, size: Int)?) throws(GraftError) -> [ELFRelocation] {
        let what = plt ? "DT_JMPREL" : "DT_RELA"
        guard size % 24 == 0 else { throw reader.fail("\(what) is \(size) bytes, not a multiple of 24") }
        guard size > 0 else { return [] }
        let table = Int(try fileRange(address, size, what))
        var result: [ELFRelocation] = []
        result.reserveCapacity(Int(size / 24))
        var names: [UInt32: ELFRelocation.Symbol] = [:]
        for i in 0..<Int(size / 24) {
            let o = table + i * 24
            let info = reader.u64(o + 8)
            let index = UInt32(truncatingIfNeeded: info >> 32)
            var symbol: ELFRelocation.Symbol?
            if index != 0 {
                if let known = names[index] {
                    symbol = known
                } else {
                    let entry = try dynamicSymbol(index, symbols: symbols, strings: strings, relocation: "\(what) entry \(i)")
                    names[index] = entry
                    symbol = entry
                }
            }
            result.append(ELFRelocation(offset: reader.u64(o), type: UInt32(truncatingIfNeeded: info),
                                        symbolIndex: index, symbol: symbol,
                                        addend: Int64(bitPattern: reader.u64(o + 16)), isPLT: plt))
        }
        return result
    }

    /// `.dynsym` entry `index`, read through `DT_SYMTAB` (bounds-checked entry by entry: the table's
    /// length is not in the dynamic section).
    private func dynamicSymbol(_ index: UInt32, symbols: UInt64?, strings: (offset: Int, size: Int)?,
                               relocation: String) throws(GraftError) -> ELFRelocation.Symbol {
        guard let symbols else { throw reader.fail("\(relocation) names symbol \(index), but there is no DT_SYMTAB") }
        let (offset, overflow) = symbols.addingReportingOverflow(UInt64(index) * 24)
        if overflow { throw reader.fail("\(relocation) names symbol \(index), beyond the end of the file") }
        try reader.check(offset, 24, "\(relocation)'s symbol \(index)")
        let o = Int(offset)
        guard let strings,
              let name = reader.string(tableOffset: strings.offset, tableSize: strings.size, index: Int(reader.u32(o))) else {
            throw reader.fail("\(relocation) names symbol \(index), whose name is not in DT_STRTAB")
        }
        let info = reader.u8(o + 4)
        let kind = SymbolKind(symbolInfo: info)
        let section = reader.u16(o + 6)
        return ELFRelocation.Symbol(name: name, isDefined: section != 0, isAbsolute: section == 0xfff1, value: reader.u64(o + 8),
                                    kind: kind, isWeak: info >> 4 == 2)
    }
}
