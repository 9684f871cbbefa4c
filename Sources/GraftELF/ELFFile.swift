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

/// A little-endian ELF executable or shared object, mapped read-only with mmap(2): 64-bit (what the
/// live engine patches) or 32-bit (i386 and ARM files, for `graft patch --file`).
///
/// The header, program headers and section headers are read in `init`; symbol tables are parsed on
/// first use and cached. Only `ET_EXEC` and `ET_DYN` files are accepted.
public final class ELFFile: @unchecked Sendable {
    public let path: String
    /// `ET_DYN` (PIE executable or shared object): loaded at a bias chosen by the kernel or ld.so.
    public let isPositionIndependent: Bool
    /// `e_machine`: 62 = x86_64 (`EM_X86_64`), 183 = aarch64, 40 = arm, 3 = i386.
    public let machine: UInt16
    /// `ELFCLASS64`; false for `ELFCLASS32` (i386, arm).
    public let is64Bit: Bool
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
        /// 24 (`Elf64_Sym`) or 16 (`Elf32_Sym`).
        var entrySize: Int = 24
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
            self.is64Bit = header.is64
            self.entry = header.entry
            let programHeaders = try reader.programHeaders(header)
            self.loadSegments = programHeaders.filter { $0.type == 1 }.map {
                LoadSegment(vaddr: $0.vaddr, memsz: $0.memsz, offset: $0.offset, filesz: $0.filesz,
                            readable: $0.flags & 4 != 0, writable: $0.flags & 2 != 0, executable: $0.flags & 1 != 0)
            }
            let sections = try reader.sectionHeaders(header)
            self.buildID = try reader.buildID(programHeaders: programHeaders, sections: sections)
            self.tables = try reader.symbolTables(sections, is64: header.is64)
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
