import Glibc
import GraftCore

// The raw reading behind ELFFile (ELF64 and ELF32 headers, program and section headers, symbol
// tables, notes, PLT stubs, versions), split from ELFFile.swift by concern.

/// Bounds-checked little-endian reads from the mapped file. Every malformed offset becomes `elfFormat`.
struct Reader {
    let base: UnsafeRawPointer
    let length: Int
    let path: String

    struct Header {
        var is64 = true
        var type: UInt16, machine: UInt16, entry: UInt64
        var phoff: UInt64, phentsize: UInt16, phnum: UInt16
        var shoff: UInt64, shentsize: UInt16, shnum: UInt16, shstrndx: UInt16
    }

    struct ProgramHeader {
        var type: UInt32, flags: UInt32, offset: UInt64, vaddr: UInt64, filesz: UInt64, memsz: UInt64, align: UInt64
    }

    struct Section {
        var name: UInt32, type: UInt32, offset: UInt64, size: UInt64, link: UInt32, entsize: UInt64, addralign: UInt64
        var addr: UInt64 = 0
    }

    func fail(_ reason: String) -> GraftError { .elfFormat(path: path, reason: reason) }

    func check(_ offset: UInt64, _ size: UInt64, _ what: @autoclosure () -> String) throws(GraftError) {
        guard offset <= UInt64(length), size <= UInt64(length) - offset else {
            throw fail("\(what()) at file offset \(hex(offset)) (+\(size) bytes) lies beyond the end of the file (\(length) bytes)")
        }
    }

    func u8(_ offset: Int) -> UInt8 { base.load(fromByteOffset: offset, as: UInt8.self) }
    func u16(_ offset: Int) -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    func u32(_ offset: Int) -> UInt32 { UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    func u64(_ offset: Int) -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }

    /// A NUL-terminated string inside `[tableOffset, tableOffset + tableSize)`; nil if unterminated.
    func string(tableOffset: Int, tableSize: Int, index: Int) -> String? {
        guard index >= 0, index < tableSize else { return nil }
        let start = base + tableOffset + index
        guard let nul = memchr(start, 0, tableSize - index) else { return nil }
        let count = UnsafeRawPointer(nul) - start
        return String(decoding: UnsafeRawBufferPointer(start: start, count: count), as: UTF8.self)
    }

    static func parseHeader(_ r: Reader) throws(GraftError) -> Header {
        guard r.u8(0) == 0x7f, r.u8(1) == UInt8(ascii: "E"), r.u8(2) == UInt8(ascii: "L"), r.u8(3) == UInt8(ascii: "F") else {
            throw r.fail("not an ELF file (no \\x7fELF magic)")
        }
        let is64: Bool
        switch r.u8(4) {   // EI_CLASS
        case 2: is64 = true
        case 1: is64 = false
        case let other: throw r.fail("invalid ELF class \(other)")
        }
        switch r.u8(5) {   // EI_DATA
        case 1: break
        case 2: throw r.fail("big-endian ELF (ELFDATA2MSB) is not supported; graft reads little-endian ELF files only")
        case let other: throw r.fail("invalid ELF data encoding \(other)")
        }
        // Elf32_Ehdr: the same fields with 4-byte addresses and offsets (52 bytes; the file is >= 64).
        let header = is64
            ? Header(type: r.u16(16), machine: r.u16(18), entry: r.u64(24),
                     phoff: r.u64(32), phentsize: r.u16(54), phnum: r.u16(56),
                     shoff: r.u64(40), shentsize: r.u16(58), shnum: r.u16(60), shstrndx: r.u16(62))
            : Header(is64: false, type: r.u16(16), machine: r.u16(18), entry: UInt64(r.u32(24)),
                     phoff: UInt64(r.u32(28)), phentsize: r.u16(42), phnum: r.u16(44),
                     shoff: UInt64(r.u32(32)), shentsize: r.u16(46), shnum: r.u16(48), shstrndx: r.u16(50))
        switch header.type {
        case 2, 3: break
        case 1: throw r.fail("ELF type ET_REL (relocatable object file) is not a program or shared library")
        case 4: throw r.fail("ELF type ET_CORE (core dump) is not a program or shared library")
        case let other: throw r.fail("unsupported ELF type \(other)")
        }
        return header
    }

    func programHeaders(_ h: Header) throws(GraftError) -> [ProgramHeader] {
        guard h.phnum > 0 else { return [] }
        let minimum = h.is64 ? 56 : 32
        guard h.phentsize >= minimum else { throw fail("program header entry size \(h.phentsize) is smaller than \(minimum)") }
        try check(h.phoff, UInt64(h.phnum) * UInt64(h.phentsize), "the program header table")
        return (0..<Int(h.phnum)).map { i in
            let o = Int(h.phoff) + i * Int(h.phentsize)
            guard h.is64 else {   // Elf32_Phdr: p_flags moves after p_memsz
                return ProgramHeader(type: u32(o), flags: u32(o + 24), offset: UInt64(u32(o + 4)), vaddr: UInt64(u32(o + 8)),
                                     filesz: UInt64(u32(o + 16)), memsz: UInt64(u32(o + 20)), align: UInt64(u32(o + 28)))
            }
            return ProgramHeader(type: u32(o), flags: u32(o + 4), offset: u64(o + 8), vaddr: u64(o + 16),
                                 filesz: u64(o + 32), memsz: u64(o + 40), align: u64(o + 48))
        }
    }

    func sectionHeaders(_ h: Header) throws(GraftError) -> [Section] {
        guard h.shoff != 0, h.shnum > 0 else { return [] }   // sstrip'ed files have none
        let minimum = h.is64 ? 64 : 40
        guard h.shentsize >= minimum else { throw fail("section header entry size \(h.shentsize) is smaller than \(minimum)") }
        try check(h.shoff, UInt64(h.shnum) * UInt64(h.shentsize), "the section header table")
        return (0..<Int(h.shnum)).map { i in
            let o = Int(h.shoff) + i * Int(h.shentsize)
            guard h.is64 else {   // Elf32_Shdr
                return Section(name: u32(o), type: u32(o + 4), offset: UInt64(u32(o + 16)), size: UInt64(u32(o + 20)),
                               link: u32(o + 24), entsize: UInt64(u32(o + 36)), addralign: UInt64(u32(o + 32)), addr: UInt64(u32(o + 12)))
            }
            return Section(name: u32(o), type: u32(o + 4), offset: u64(o + 24), size: u64(o + 32),
                           link: u32(o + 40), entsize: u64(o + 56), addralign: u64(o + 48), addr: u64(o + 16))
        }
    }

    /// `NT_GNU_BUILD_ID` from the `PT_NOTE` segments, or from `SHT_NOTE` sections when there are none.
    func buildID(programHeaders: [ProgramHeader], sections: [Section]) throws(GraftError) -> String? {
        var regions = programHeaders.filter { $0.type == 4 }.map { ($0.offset, $0.filesz, $0.align) }
        if regions.isEmpty { regions = sections.filter { $0.type == 7 }.map { ($0.offset, $0.size, $0.addralign) } }
        for (offset, size, align) in regions {
            try check(offset, size, "a note segment")
            // Notes are 4-byte aligned except in 8-aligned segments (e.g. .note.gnu.property).
            let alignment = align == 8 ? 8 : 4
            func pad(_ n: Int) -> Int { (n + alignment - 1) & ~(alignment - 1) }
            var cursor = Int(offset)
            let end = Int(offset + size)
            while cursor + 12 <= end {
                let namesz = Int(u32(cursor)), descsz = Int(u32(cursor + 4)), type = u32(cursor + 8)
                let nameStart = cursor + 12
                let descStart = nameStart + pad(namesz)
                guard namesz <= end, descsz <= end, descStart + descsz <= end else { break }
                if type == 3, namesz == 4, u32(nameStart) == 0x0055_4e47 {   // "GNU\0"
                    return hexString(Array(UnsafeRawBufferPointer(start: base + descStart, count: descsz)))
                }
                cursor = descStart + pad(descsz)
            }
        }
        return nil
    }

    func symbolTables(_ sections: [Section], is64: Bool) throws(GraftError) -> [ELFFile.SymbolTable] {
        var tables: [ELFFile.SymbolTable] = []
        let expected: UInt64 = is64 ? 24 : 16
        for section in sections where section.type == 2 || section.type == 11 {   // SHT_SYMTAB, SHT_DYNSYM
            let isDynamic = section.type == 11
            let entsize = section.entsize == 0 ? expected : section.entsize
            guard entsize == expected else { throw fail("symbol table entry size \(entsize) is not \(expected)") }
            try check(section.offset, section.size, isDynamic ? ".dynsym" : ".symtab")
            guard Int(section.link) < sections.count else {
                throw fail("symbol table links to missing string table section \(section.link)")
            }
            let strings = sections[Int(section.link)]
            try check(strings.offset, strings.size, "a symbol string table")
            let count = Int(section.size / expected)
            var versions: ELFFile.VersionInfo?
            if isDynamic,
               let versym = sections.first(where: { $0.type == 0x6fff_ffff }),   // SHT_GNU_versym
               versym.offset <= UInt64(length), UInt64(count) * 2 <= UInt64(length) - versym.offset {
                versions = ELFFile.VersionInfo(versymOffset: Int(versym.offset), names: versionNames(sections))
            }
            tables.append(.init(offset: Int(section.offset), count: count, stringsOffset: Int(strings.offset),
                                stringsSize: Int(strings.size), isDynamic: isDynamic, entrySize: Int(expected), versions: versions))
        }
        return tables
    }

    /// PLT stubs named after the symbol their GOT slot is relocated for. Each stub of `.plt`,
    /// `.plt.sec` and `.plt.got` holds a `jmp *disp32(%rip)` (`ff 25`, maybe after endbr64 and a bnd
    /// prefix) whose slot a JUMP_SLOT or GLOB_DAT relocation names; PLT0 and lazy-binding stubs have
    /// none and are skipped. x86_64 only; anything malformed yields no stub rather than an error.
    func pltStubs(header: Header, sections: [Section]) -> [ELFSymbol] {
        guard header.machine == 62, Int(header.shstrndx) < sections.count else { return [] }
        let names = sections[Int(header.shstrndx)]
        guard names.offset <= UInt64(length), names.size <= UInt64(length) - names.offset else { return [] }
        func name(_ section: Section) -> String? {
            string(tableOffset: Int(names.offset), tableSize: Int(names.size), index: Int(section.name))
        }
        func inFile(_ section: Section) -> Bool { section.offset <= UInt64(length) && section.size <= UInt64(length) - section.offset }
        // GOT slot -> symbol name, from the relocations against .dynsym.
        var slots: [UInt64: String] = [:]
        for rela in sections where rela.type == 4 && inFile(rela) && Int(rela.link) < sections.count {   // SHT_RELA
            let symbols = sections[Int(rela.link)]
            guard symbols.type == 11, inFile(symbols), Int(symbols.link) < sections.count else { continue }
            let strings = sections[Int(symbols.link)]
            guard inFile(strings) else { continue }
            for i in 0..<Int(rela.size / 24) {
                let o = Int(rela.offset) + i * 24
                let info = u64(o + 8)
                let type = info & 0xffff_ffff, index = Int(info >> 32)
                guard type == 7 || type == 6, index > 0, UInt64(index) * 24 + 24 <= symbols.size else { continue }   // JUMP_SLOT, GLOB_DAT
                if let symbol = string(tableOffset: Int(strings.offset), tableSize: Int(strings.size),
                                       index: Int(u32(Int(symbols.offset) + index * 24))), !symbol.isEmpty {
                    slots[u64(o)] = symbol
                }
            }
        }
        guard !slots.isEmpty else { return [] }
        var stubs: [ELFSymbol] = []
        for section in sections where section.type == 1 && inFile(section) {   // SHT_PROGBITS
            guard let sectionName = name(section), [".plt", ".plt.sec", ".plt.got"].contains(sectionName) else { continue }
            let size = section.entsize >= 8 && section.entsize <= 32 ? section.entsize : 16
            var entry: UInt64 = 0
            while entry + size <= section.size {
                let o = Int(section.offset + entry)
                for i in 0...min(Int(size) - 6, 8) where u8(o + i) == 0xff && u8(o + i + 1) == 0x25 {
                    let displacement = Int64(Int32(bitPattern: u32(o + i + 2)))
                    let slot = UInt64(bitPattern: Int64(bitPattern: section.addr &+ entry) &+ Int64(i) &+ 6 &+ displacement)
                    if let symbol = slots[slot] {
                        stubs.append(ELFSymbol(name: symbol + "@plt", value: section.addr &+ entry, size: size, kind: .function,
                                               isGlobal: false, fromDynsym: true, version: nil, isDefaultVersion: true))
                    }
                    break
                }
                entry += size
            }
        }
        return stubs.sorted { $0.value < $1.value }
    }

    /// `.gnu.version_d`: version index -> name (`Elf64_Verdef` chain, first `Elf64_Verdaux` is the name).
    /// Malformed chains end the walk rather than fail: versions only decorate names.
    func versionNames(_ sections: [Section]) -> [Int: String] {
        guard let verdef = sections.first(where: { $0.type == 0x6fff_fffd }), Int(verdef.link) < sections.count,
              verdef.offset <= UInt64(length), verdef.size <= UInt64(length) - verdef.offset else { return [:] }
        let strings = sections[Int(verdef.link)]
        guard strings.offset <= UInt64(length), strings.size <= UInt64(length) - strings.offset else { return [:] }
        var names: [Int: String] = [:]
        var cursor = Int(verdef.offset)
        let end = Int(verdef.offset + verdef.size)
        for _ in 0..<1_000_000 {
            guard cursor + 20 <= end else { break }
            let flags = u16(cursor + 2), index = Int(u16(cursor + 4)), count = u16(cursor + 6)
            let aux = Int(u32(cursor + 12)), next = Int(u32(cursor + 16))
            if count > 0, cursor + aux + 8 <= end, flags & 1 == 0,   // VER_FLG_BASE names the file itself
               let name = string(tableOffset: Int(strings.offset), tableSize: Int(strings.size), index: Int(u32(cursor + aux))) {
                names[index] = name
            }
            guard next > 0 else { break }
            cursor += next
        }
        return names
    }

    /// Appends the defined symbols of `table` whose name matches (any type; SHN_UNDEF skipped).
    func definedSymbols(where matches: (String) -> Bool, in table: ELFFile.SymbolTable, into result: inout [ELFSymbol]) {
        for i in 0..<table.count {
            let entry = symbolEntry(table, i)
            guard entry.shndx != 0,
                  let symbolName = string(tableOffset: table.stringsOffset, tableSize: table.stringsSize, index: Int(entry.name)),
                  matches(symbolName) else { continue }
            let kind = SymbolKind(symbolInfo: entry.info)
            result.append(ELFSymbol(name: symbolName, value: entry.value, size: entry.size, kind: kind,
                                    isGlobal: entry.info >> 4 != 0, fromDynsym: table.isDynamic))
        }
    }

    /// Entry `i` of a symbol table: `Elf64_Sym` (name, info, other, shndx, value, size) or `Elf32_Sym`
    /// (name, value, size, info, other, shndx).
    func symbolEntry(_ table: ELFFile.SymbolTable, _ i: Int) -> (name: UInt32, info: UInt8, shndx: UInt16, value: UInt64, size: UInt64) {
        let o = table.offset + i * table.entrySize
        if table.entrySize == 16 {
            return (u32(o), u8(o + 12), u16(o + 14), UInt64(u32(o + 4)), UInt64(u32(o + 8)))
        }
        return (u32(o), u8(o + 4), u16(o + 6), u64(o + 8), u64(o + 16))
    }

    /// Appends the defined FUNC/IFUNC symbols of `table` with a nonzero value.
    func functions(in table: ELFFile.SymbolTable, into result: inout [ELFSymbol]) {
        for i in 0..<table.count {
            let entry = symbolEntry(table, i)
            let info = entry.info
            let type = info & 0xf
            let kind: SymbolKind
            switch type {
            case 2: kind = .function
            case 10: kind = .ifunc
            default: continue
            }
            let shndx = entry.shndx
            let value = entry.value
            // SHN_UNDEF: an import. In a non-PIE executable an import can carry the nonzero address of
            // its PLT stub (canonical function address), which is not a definition.
            guard shndx != 0, value != 0 else { continue }
            guard var name = string(tableOffset: table.stringsOffset, tableSize: table.stringsSize,
                                    index: Int(entry.name)), !name.isEmpty else { continue }
            var version: String?
            var isDefault = true
            if let versions = table.versions {
                let raw = u16(versions.versymOffset + i * 2)
                let index = Int(raw & 0x7fff)
                if index >= 2, let versionName = versions.names[index] {
                    version = versionName
                    isDefault = raw & 0x8000 == 0
                }
            } else if !table.isDynamic, let at = name.firstIndex(of: "@"), at != name.startIndex {
                // Some linkers keep `name@@VERSION` in .symtab.
                var rest = name[name.index(after: at)...]
                isDefault = rest.hasPrefix("@")
                if isDefault { rest = rest.dropFirst() }
                version = rest.isEmpty ? nil : String(rest)
                name = String(name[..<at])
            }
            let binding = info >> 4
            result.append(ELFSymbol(name: name, value: value, size: entry.size, kind: kind,
                                    isGlobal: binding != 0, fromDynsym: table.isDynamic,
                                    version: version, isDefaultVersion: isDefault))
        }
    }
}
