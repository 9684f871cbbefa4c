import Glibc
import GraftCore

/// A `PT_LOAD` program header: a range of the file mapped at `vaddr` (link time).
public struct LoadSegment: Sendable, Equatable {
    public let vaddr: UInt64
    public let memsz: UInt64
    public let offset: UInt64
    public let filesz: UInt64
    public let readable: Bool
    public let writable: Bool
    public let executable: Bool

    public init(vaddr: UInt64, memsz: UInt64, offset: UInt64, filesz: UInt64,
                readable: Bool, writable: Bool, executable: Bool) {
        self.vaddr = vaddr
        self.memsz = memsz
        self.offset = offset
        self.filesz = filesz
        self.readable = readable
        self.writable = writable
        self.executable = executable
    }
}

/// A 64-bit little-endian ELF executable or shared object, mapped read-only with mmap(2).
///
/// The header, program headers and section headers are read in `init`; symbol tables are parsed on
/// first use and cached. Only `ET_EXEC` and `ET_DYN` files are accepted.
public final class ELFFile: @unchecked Sendable {
    public let path: String
    /// `ET_DYN` (PIE executable or shared object): loaded at a bias chosen by the kernel or ld.so.
    public let isPositionIndependent: Bool
    /// `e_machine`: 62 = x86_64 (`EM_X86_64`), 183 = aarch64.
    public let machine: UInt16
    /// `e_entry`, link time.
    public let entry: UInt64
    /// Lowercase hex of the `NT_GNU_BUILD_ID` note, nil when absent.
    public let buildID: String?
    public let loadSegments: [LoadSegment]
    /// The file has a `.symtab` (not stripped).
    public let hasSymtab: Bool
    /// The file has a `.dynsym`.
    public let hasDynsym: Bool

    // Immutable after init: the mapping and where the tables are.
    private let base: UnsafeRawPointer
    private let length: Int
    private let tables: [SymbolTable]
    /// `name@plt` for each PLT stub whose GOT slot a relocation names (see `pltSymbol(containing:)`).
    public let pltSymbols: [ELFSymbol]
    /// `.gopclntab`, read for names when `.symtab` is gone (`ELFGoFunctions.swift`).
    let goFunctionTable: Reader.GoFunctionTable?
    let cache = Locked(SymbolCache())

    struct SymbolTable {
        var offset: Int, count: Int, stringsOffset: Int, stringsSize: Int, isDynamic: Bool
        var versions: VersionInfo?
    }

    struct VersionInfo {
        var versymOffset: Int
        var names: [Int: String]   // verdef index -> version name
    }

    struct SymbolCache {
        var functions: [ELFSymbol]?
        var maxEnd: [UInt64] = []   // running max of `end` over functions[0...i], for containment search
        var byName: [String: [ELFSymbol]]?
        var demangled: [String: [ELFSymbol]]?
        var isGoProgram: Bool?
        var unwindFunctions: [CodeRange]?   // ELFUnwindFunctions.swift
    }

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw GraftError.systemCall(name: "open", errno: errno, context: path) }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 { throw GraftError.systemCall(name: "fstat", errno: errno, context: path) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw GraftError.elfFormat(path: path, reason: "not a regular file")
        }
        guard info.st_size >= 64 else {
            throw GraftError.elfFormat(path: path, reason: "file is \(info.st_size) bytes, too short for an ELF header")
        }
        let length = Int(info.st_size)
        guard let mapped = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw GraftError.systemCall(name: "mmap", errno: errno, context: path)
        }
        let base = UnsafeRawPointer(mapped)
        do {
            let reader = Reader(base: base, length: length, path: path)
            let header = try Reader.parseHeader(reader)
            self.isPositionIndependent = header.type == 3
            self.machine = header.machine
            self.entry = header.entry
            let programHeaders = try reader.programHeaders(header)
            self.loadSegments = programHeaders.filter { $0.type == 1 }.map {
                LoadSegment(vaddr: $0.vaddr, memsz: $0.memsz, offset: $0.offset, filesz: $0.filesz,
                            readable: $0.flags & 4 != 0, writable: $0.flags & 2 != 0, executable: $0.flags & 1 != 0)
            }
            let sections = try reader.sectionHeaders(header)
            self.buildID = try reader.buildID(programHeaders: programHeaders, sections: sections)
            self.tables = try reader.symbolTables(sections)
            self.pltSymbols = reader.pltStubs(header: header, sections: sections)
            self.hasSymtab = tables.contains { !$0.isDynamic }
            self.goFunctionTable = hasSymtab ? nil : reader.goFunctionTable(header: header, sections: sections)
            self.hasDynsym = tables.contains { $0.isDynamic }
        } catch {
            munmap(mapped, length)
            throw error
        }
        self.base = base
        self.length = length
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), length) }

    /// Bounds-checked reads of the mapped file, for the parsers in other files (`ELFDynamic.swift`).
    var reader: Reader { Reader(base: base, length: length, path: path) }

    /// `STT_FUNC` and `STT_GNU_IFUNC` symbols with a nonzero value defined in this file, from `.symtab`
    /// and `.dynsym`, deduplicated by (name, value) (the `.dynsym` copy, which carries the version, is
    /// kept) and sorted by value. Parsed on first use.
    public var functionSymbols: [ELFSymbol] { loadFunctions().functions }

    /// Function symbols named `name`, best first (see `symbol(containing:)` for the order). `name` may
    /// carry a version: `memcpy@GLIBC_2.2.5` or `memcpy@@GLIBC_2.14`.
    public func symbols(named name: String) -> [ELFSymbol] {
        let index = cache.withLock { cache -> [String: [ELFSymbol]] in
            if let byName = cache.byName { return byName }
            let functions = cache.functions ?? Self.computeFunctions(self)
            if cache.functions == nil { cache.functions = functions; cache.maxEnd = Self.runningMaxEnd(functions) }
            var byName: [String: [ELFSymbol]] = [:]
            for symbol in functions { byName[symbol.name, default: []].append(symbol) }
            for key in byName.keys { byName[key]!.sort(by: ELFSymbol.preferred) }
            cache.byName = byName
            return byName
        }
        if let found = index[name] { return found }
        // `name@@VERSION` / `name@VERSION`.
        guard let at = name.firstIndex(of: "@"), at != name.startIndex else { return [] }
        let bare = String(name[..<at])
        var version = name[name.index(after: at)...]
        let wantsDefault = version.hasPrefix("@")
        if wantsDefault { version = version.dropFirst() }
        return (index[bare] ?? []).filter { $0.version.map { $0[...] } == version && (!wantsDefault || $0.isDefaultVersion) }
    }

    /// Go compiled this file (its runtime is in it: `runtime.main`): its functions take Go's
    /// register ABI, and its threads belong to Go's scheduler. Looked up once.
    public var isGoProgram: Bool {
        if let known = cache.withLock({ $0.isGoProgram }) { return known }
        let isGo = !definedSymbols(named: "runtime.main").isEmpty || symbols(named: "runtime.main").contains { $0.kind == .function }
        cache.withLock { $0.isGoProgram = isGo }
        return isGo
    }

    /// The mangled (`_Z`) function symbols by their demangled names (built on first use).
    public var demangledFunctions: [String: [ELFSymbol]] {
        if let known = cache.withLock({ $0.demangled }) { return known }
        var table: [String: [ELFSymbol]] = [:]
        for symbol in functionSymbols where Demangler.isMangled(symbol.name) {
            if let full = Demangler.demangle(symbol.name) { table[full, default: []].append(symbol) }
        }
        cache.withLock { $0.demangled = table }
        return table
    }

    /// Defined symbols named `name` of any type (data objects, functions, untyped), from `.dynsym`
    /// and `.symtab`, the `.dynsym` copy first; not cached (a lookup walks the tables). For data
    /// symbols such as `graft_original_<name>` and, when graft maps a library itself, the names its
    /// relocations refer to.
    public func definedSymbols(named name: String) -> [ELFSymbol] {
        definedSymbols { $0 == name }
    }

    /// Defined symbols whose name `matches` (any type; `.dynsym` first): `_ZTV…` vtables, say.
    public func definedSymbols(where matches: (String) -> Bool) -> [ELFSymbol] {
        let reader = Reader(base: base, length: length, path: path)
        var found: [ELFSymbol] = []
        for table in tables.sorted(by: { $0.isDynamic && !$1.isDynamic }) {
            reader.definedSymbols(where: matches, in: table, into: &found)
        }
        return found
    }

    /// The innermost function symbol whose `[value, value + size)` contains `vaddr` (link time);
    /// among aliases of one address the preferred name (`getpid` over `__getpid`). Size-0 symbols
    /// cover nothing. Binary search plus a walk back bounded by a running maximum of symbol ends.
    public func symbol(containing vaddr: UInt64) -> ELFSymbol? {
        let (functions, maxEnd) = loadFunctions()
        var low = 0, high = functions.count   // first index with value > vaddr
        while low < high {
            let mid = (low + high) / 2
            if functions[mid].value <= vaddr { low = mid + 1 } else { high = mid }
        }
        var best: ELFSymbol?
        var index = low - 1
        while index >= 0 && maxEnd[index] > vaddr {
            let candidate = functions[index]
            if candidate.contains(vaddr) {
                if let current = best {
                    if candidate.value > current.value
                        || (candidate.value == current.value && ELFSymbol.preferred(candidate, current)) {
                        best = candidate
                    }
                } else {
                    best = candidate
                }
            }
            index -= 1
        }
        return best
    }

    /// The PLT stub containing `vaddr` (link time), named `function@plt` as gdb and objdump name it:
    /// not a function symbol of the file (no `graft symbols` line, nothing to patch by that name), but
    /// what a trace or backtrace should call the few instructions a call through the PLT runs.
    public func pltSymbol(containing vaddr: UInt64) -> ELFSymbol? {
        var low = 0, high = pltSymbols.count
        while low < high {
            let mid = (low + high) / 2
            if pltSymbols[mid].value <= vaddr { low = mid + 1 } else { high = mid }
        }
        guard low > 0, pltSymbols[low - 1].contains(vaddr) else { return nil }
        return pltSymbols[low - 1]
    }

    /// The file's bytes for `[vaddr, vaddr + count)` (link time), or nil unless the whole range lies in
    /// the file-backed part (`p_filesz`) of one `PT_LOAD` segment (`.bss` is not in the file).
    public func bytes(atVirtualAddress vaddr: UInt64, count: Int) -> [UInt8]? {
        guard count >= 0, let offset = fileOffset(forVirtualAddress: vaddr) else { return nil }
        guard let segment = loadSegments.first(where: { vaddr >= $0.vaddr && vaddr - $0.vaddr < $0.filesz }),
              UInt64(count) <= segment.filesz - (vaddr - segment.vaddr),
              offset <= UInt64(length), UInt64(count) <= UInt64(length) - offset else { return nil }
        return Array(UnsafeRawBufferPointer(start: base + Int(offset), count: count))
    }

    /// The file offset holding link-time address `vaddr`, nil if no `PT_LOAD` has it in the file.
    public func fileOffset(forVirtualAddress vaddr: UInt64) -> UInt64? {
        guard let segment = loadSegments.first(where: { vaddr >= $0.vaddr && vaddr - $0.vaddr < $0.filesz }) else {
            return nil
        }
        return segment.offset &+ (vaddr - segment.vaddr)   // wraps on a damaged p_offset; callers bounds-check
    }

    /// The load bias of this file when the page at file offset `fileOffset` is mapped at `start`:
    /// `start - (p_vaddr - p_offset + fileOffset)` for the `PT_LOAD` whose pages hold that offset.
    /// 0 for a non-PIE executable at its link address. Nil when no segment covers the offset.
    public func loadBias(mappedAt start: UInt64, fileOffset: UInt64) -> UInt64? {
        let page: UInt64 = 4096
        // Mappings start at page boundaries, so a segment whose p_offset is not page aligned (the RW
        // segment usually) is mapped from the page below p_offset.
        guard let segment = loadSegments.first(where: {
            fileOffset >= ($0.offset & ~(page - 1)) && fileOffset < $0.offset &+ Swift.max($0.filesz, 1)
        }) else { return nil }
        return start &- (segment.vaddr &- segment.offset &+ fileOffset)
    }

    // MARK: - Symbols

    private func loadFunctions() -> (functions: [ELFSymbol], maxEnd: [UInt64]) {
        cache.withLock { cache in
            if let functions = cache.functions { return (functions, cache.maxEnd) }
            let functions = Self.computeFunctions(self)
            cache.functions = functions
            cache.maxEnd = Self.runningMaxEnd(functions)
            return (functions, cache.maxEnd)
        }
    }

    private static func runningMaxEnd(_ functions: [ELFSymbol]) -> [UInt64] {
        var result: [UInt64] = []
        result.reserveCapacity(functions.count)
        var running: UInt64 = 0
        for symbol in functions {
            running = Swift.max(running, symbol.end)
            result.append(running)
        }
        return result
    }

    private static func computeFunctions(_ file: ELFFile) -> [ELFSymbol] {
        var all: [ELFSymbol] = []
        let reader = Reader(base: file.base, length: file.length, path: file.path)
        // .dynsym first so that the stable sort + dedup below keeps its (versioned) copy.
        for table in file.tables.sorted(by: { $0.isDynamic && !$1.isDynamic }) {
            reader.functions(in: table, into: &all)
        }
        if let go = file.goFunctionTable { all += reader.goFunctions(go) }  // a stripped Go binary
        // Sort by (value, original position): integer keys only, so equal values keep .dynsym first.
        // Then keep one copy of each (name, value) pair, scanning the short run of symbols that share
        // the value: the .dynsym copy, and of two versions the default one.
        let values = all.map(\.value)
        let order = all.indices.sorted { values[$0] != values[$1] ? values[$0] < values[$1] : $0 < $1 }
        var result: [ELFSymbol] = []
        result.reserveCapacity(all.count)
        var runStart = 0
        for position in order {
            let symbol = all[position]
            if let last = result.last, last.value != symbol.value { runStart = result.count }
            if let duplicate = result[runStart...].firstIndex(where: { $0.name == symbol.name }) {
                let kept = result[duplicate]
                if (symbol.fromDynsym && !kept.fromDynsym)
                    || (symbol.fromDynsym == kept.fromDynsym && symbol.isDefaultVersion && !kept.isDefaultVersion) {
                    result[duplicate] = symbol
                }
                continue
            }
            result.append(symbol)
        }
        return result
    }
}

// MARK: - Raw reading

/// Bounds-checked little-endian reads from the mapped file. Every malformed offset becomes `elfFormat`.
struct Reader {
    let base: UnsafeRawPointer
    let length: Int
    let path: String

    struct Header {
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
        switch r.u8(4) {   // EI_CLASS
        case 2: break
        case 1: throw r.fail("32-bit ELF (ELFCLASS32) is not supported; graft reads 64-bit ELF files only")
        case let other: throw r.fail("invalid ELF class \(other)")
        }
        switch r.u8(5) {   // EI_DATA
        case 1: break
        case 2: throw r.fail("big-endian ELF (ELFDATA2MSB) is not supported; graft reads little-endian ELF files only")
        case let other: throw r.fail("invalid ELF data encoding \(other)")
        }
        let header = Header(type: r.u16(16), machine: r.u16(18), entry: r.u64(24),
                            phoff: r.u64(32), phentsize: r.u16(54), phnum: r.u16(56),
                            shoff: r.u64(40), shentsize: r.u16(58), shnum: r.u16(60), shstrndx: r.u16(62))
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
        guard h.phentsize >= 56 else { throw fail("program header entry size \(h.phentsize) is smaller than 56") }
        try check(h.phoff, UInt64(h.phnum) * UInt64(h.phentsize), "the program header table")
        return (0..<Int(h.phnum)).map { i in
            let o = Int(h.phoff) + i * Int(h.phentsize)
            return ProgramHeader(type: u32(o), flags: u32(o + 4), offset: u64(o + 8), vaddr: u64(o + 16),
                                 filesz: u64(o + 32), memsz: u64(o + 40), align: u64(o + 48))
        }
    }

    func sectionHeaders(_ h: Header) throws(GraftError) -> [Section] {
        guard h.shoff != 0, h.shnum > 0 else { return [] }   // sstrip'ed files have none
        guard h.shentsize >= 64 else { throw fail("section header entry size \(h.shentsize) is smaller than 64") }
        try check(h.shoff, UInt64(h.shnum) * UInt64(h.shentsize), "the section header table")
        return (0..<Int(h.shnum)).map { i in
            let o = Int(h.shoff) + i * Int(h.shentsize)
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

    func symbolTables(_ sections: [Section]) throws(GraftError) -> [ELFFile.SymbolTable] {
        var tables: [ELFFile.SymbolTable] = []
        for section in sections where section.type == 2 || section.type == 11 {   // SHT_SYMTAB, SHT_DYNSYM
            let isDynamic = section.type == 11
            let entsize = section.entsize == 0 ? 24 : section.entsize
            guard entsize == 24 else { throw fail("symbol table entry size \(entsize) is not 24") }
            try check(section.offset, section.size, isDynamic ? ".dynsym" : ".symtab")
            guard Int(section.link) < sections.count else {
                throw fail("symbol table links to missing string table section \(section.link)")
            }
            let strings = sections[Int(section.link)]
            try check(strings.offset, strings.size, "a symbol string table")
            let count = Int(section.size / 24)
            var versions: ELFFile.VersionInfo?
            if isDynamic,
               let versym = sections.first(where: { $0.type == 0x6fff_ffff }),   // SHT_GNU_versym
               versym.offset <= UInt64(length), UInt64(count) * 2 <= UInt64(length) - versym.offset {
                versions = ELFFile.VersionInfo(versymOffset: Int(versym.offset), names: versionNames(sections))
            }
            tables.append(.init(offset: Int(section.offset), count: count, stringsOffset: Int(strings.offset),
                                stringsSize: Int(strings.size), isDynamic: isDynamic, versions: versions))
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
            let o = table.offset + i * 24
            guard u16(o + 6) != 0,
                  let symbolName = string(tableOffset: table.stringsOffset, tableSize: table.stringsSize, index: Int(u32(o))),
                  matches(symbolName) else { continue }
            let info = u8(o + 4)
            let kind = SymbolKind(symbolInfo: info)
            result.append(ELFSymbol(name: symbolName, value: u64(o + 8), size: u64(o + 16), kind: kind,
                                    isGlobal: info >> 4 != 0, fromDynsym: table.isDynamic))
        }
    }

    /// Appends the defined FUNC/IFUNC symbols of `table` with a nonzero value.
    func functions(in table: ELFFile.SymbolTable, into result: inout [ELFSymbol]) {
        for i in 0..<table.count {
            let o = table.offset + i * 24
            let info = u8(o + 4)
            let type = info & 0xf
            let kind: SymbolKind
            switch type {
            case 2: kind = .function
            case 10: kind = .ifunc
            default: continue
            }
            let shndx = u16(o + 6)
            let value = u64(o + 8)
            // SHN_UNDEF: an import. In a non-PIE executable an import can carry the nonzero address of
            // its PLT stub (canonical function address), which is not a definition.
            guard shndx != 0, value != 0 else { continue }
            guard var name = string(tableOffset: table.stringsOffset, tableSize: table.stringsSize,
                                    index: Int(u32(o))), !name.isEmpty else { continue }
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
            result.append(ELFSymbol(name: name, value: value, size: u64(o + 16), kind: kind,
                                    isGlobal: binding != 0, fromDynsym: table.isDynamic,
                                    version: version, isDefaultVersion: isDefault))
        }
    }
}
