import Glibc
import GraftCore

/// A code address with what is known about it: the module, the function symbol and the offset into it.
public struct ResolvedLocation: Sendable, CustomStringConvertible {
    /// Runtime address.
    public let address: UInt64
    public let module: LoadedModule?
    public let symbol: ELFSymbol?
    /// Runtime address of `symbol`.
    public let symbolAddress: UInt64?
    /// Without a symbol: the function around `address` that `.eh_frame` describes (runtime
    /// addresses), named `module+0xOFF` after its start (`ELFFile.unwindFunction`).
    public var unnamedFunction: CodeRange?

    public init(address: UInt64, module: LoadedModule?, symbol: ELFSymbol?, symbolAddress: UInt64?,
                unnamedFunction: CodeRange? = nil) {
        self.address = address
        self.module = module
        self.symbol = symbol
        self.symbolAddress = symbolAddress
        self.unnamedFunction = unnamedFunction
    }

    /// `module+0xOFF` of the unnamed function's start, nil with a symbol or without a range.
    public var unnamedFunctionName: String? {
        guard symbol == nil, let module, let range = unnamedFunction else { return nil }
        return "\(module.name)+\(hex(range.start &- module.start))"
    }

    /// `address - symbolAddress`, 0 without a symbol.
    public var offset: UInt64 { symbolAddress.map { address &- $0 } ?? 0 }

    /// `libc.so.6!getpid+0x4`, `victim!main`; `libc.so.6+0x2724a` (the module's first mapped byte
    /// + offset) in a module but outside any function symbol; `0x1234` when nothing is known. Every
    /// form is a LOCATION that resolves back to `address`.
    public var description: String {
        guard let module else { return hex(address) }
        guard let symbol else { return "\(module.name)+\(hex(address &- module.start))" }
        return "\(module.name)!\(symbol.displayName)" + (offset == 0 ? "" : "+\(hex(offset))")
    }
}

/// The symbols of one process (or of a maps text, for tests): its modules from `/proc/PID/maps`, each
/// module's ELF opened only when a request needs it. Resolves `Location`s to runtime addresses and
/// addresses back to `module!function+offset`.
public final class SymbolIndex: @unchecked Sendable {
    public let mappings: [Mapping]
    /// One per distinct mapped file, in map order, the main executable first.
    public let modules: [LoadedModule]
    /// Where files are opened: `/proc/PID/root` for a process, so files inside containers resolve.
    public let root: String
    public let pid: Int32?

    /// Reads `/proc/PID/maps`; opens files through `/proc/PID/root`. `adding`: modules maps cannot
    /// name (a library graft mapped itself into anonymous memory), each a file path as graft sees it
    /// and the mappings it would have had, file offsets included.
    public convenience init(pid: Int32, adding extra: [LoadedModule] = []) throws {
        let mappings = try ProcMaps.read(pid: pid)
        var exe = FileIO.readLink("/proc/\(pid)/exe")
        if let link = exe, link.hasSuffix(" (deleted)") { exe = String(link.dropLast(" (deleted)".count)) }
        self.init(mappings: mappings, root: "/proc/\(pid)/root", pid: pid, executable: exe, extra: extra)
    }

    /// An index over `mappings` whose files are opened under `root` (`/` for this machine's files).
    public convenience init(mappings: [Mapping], root: String = "/") {
        self.init(mappings: mappings, root: root, pid: nil, executable: nil)
    }

    init(mappings: [Mapping], root: String, pid: Int32?, executable: String?, extra: [LoadedModule] = []) {
        self.mappings = mappings
        self.root = root
        self.pid = pid
        var modules: [LoadedModule] = []
        for (path, cluster) in Self.images(in: mappings) {
            modules.append(LoadedModule(path: path, mappings: cluster, root: root, pid: pid))
        }
        // Map order puts the executable first in the usual layout, but not when it was started as
        // `ld.so ./program` or mapped above its libraries; /proc/PID/exe settles it.
        if let executable, let index = modules.firstIndex(where: { $0.path == executable }), index != 0 {
            modules.insert(modules.remove(at: index), at: 0)
        }
        // The vDSO: no file, but an ELF image in memory (`VDSO`), named linux-vdso.so.1.
        if let vdso = mappings.first(where: { $0.path == VDSO.mapsPath }) {
            modules.append(LoadedModule(path: VDSO.mapsPath, mappings: [vdso], root: root, pid: pid))
        }
        self.modules = modules + extra
    }

    /// The loaded images of each mapped file, in map order. ld.so maps a file as a run of mappings
    /// starting at file offset 0 with increasing offsets (including `---p` gaps). Any other mapping of
    /// the same file — a program (or graft's own `ELFFile`) mmapping it to read it — starts another
    /// run. Runs without executable pages are dropped when the file also has an executable run, so
    /// they neither shift the load bias nor claim addresses.
    static func images(in mappings: [Mapping]) -> [(path: String, mappings: [Mapping])] {
        struct Key: Hashable { var path: String, device: String, inode: UInt64, deleted: Bool }
        var runs: [(key: Key, mappings: [Mapping])] = []
        var open: [Key: Int] = [:]   // the run a file's next mapping may extend
        for mapping in mappings where mapping.isFileBacked {
            let key = Key(path: mapping.path, device: mapping.device, inode: mapping.inode, deleted: mapping.isDeleted)
            if let index = open[key], let last = runs[index].mappings.last,
               mapping.offset != 0, mapping.start >= last.end,
               // Increasing offsets; or the same offset right after (ld.so's RELRO split of one
               // page: `r--p 2000`, then `r--p 2000` read-only after relocation, then `rw-p 3000`).
               mapping.offset > last.offset || (mapping.offset == last.offset && mapping.start == last.end) {
                runs[index].mappings.append(mapping)
            } else {
                open[key] = runs.count
                runs.append((key, [mapping]))
            }
        }
        let filesWithCode = Set(runs.filter { $0.mappings.contains(where: \.executable) }.map(\.key))
        var result: [(path: String, mappings: [Mapping])] = []
        var merged: [Key: Int] = [:]
        for run in runs {
            if filesWithCode.contains(run.key) {
                if run.mappings.contains(where: \.executable) { result.append((run.key.path, run.mappings)) }
            } else if let index = merged[run.key] {
                result[index].mappings += run.mappings   // a data file: one module with every mapping
            } else {
                merged[run.key] = result.count
                result.append((run.key.path, run.mappings))
            }
        }
        return result
    }

    // MARK: - Modules and mappings

    /// The module for `name`: an exact file name (`libc.so.6`) or path, else a file name that starts with
    /// `name` followed by `.` or `-` (`libc` -> `libc.so.6`, `ld-linux` -> `ld-linux-x86-64.so.2`; never
    /// `libc` -> `libcapstone.so.4`), else by a digit (`libpython` -> `libpython3.11.so.1.0`). Several matches: `ambiguousModule`; none: `moduleNotFound`.
    public func module(named name: String) throws -> LoadedModule {
        let exact = modules.filter { $0.name == name || $0.path == name }
        if exact.count == 1 { return exact[0] }
        if exact.count > 1 {
            throw GraftError.ambiguousModule(name: name, candidates: exact.map { $0.path + ($0.isDeleted ? " (deleted)" : "") })
        }
        var prefixed = modules.filter { module in
            let fileName = module.name
            guard fileName.hasPrefix(name), fileName.count > name.count else { return false }
            let next = fileName[fileName.index(fileName.startIndex, offsetBy: name.count)]
            return next == "." || next == "-"
        }
        if prefixed.isEmpty {
            // A versioned soname: `libpython` → `libpython3.11.so.1.0` (a digit after the prefix).
            prefixed = modules.filter { module in
                let fileName = module.name
                guard fileName.hasPrefix(name), fileName.count > name.count else { return false }
                return fileName[fileName.index(fileName.startIndex, offsetBy: name.count)].isNumber
            }
        }
        if prefixed.count > 1 {
            let code = prefixed.filter(\.hasExecutableMapping)
            if code.count >= 1 { prefixed = code }
        }
        if prefixed.count == 1 { return prefixed[0] }
        if prefixed.count > 1 {
            let names = prefixed.map(\.name)
            let unique = Set(names).count == names.count
            throw GraftError.ambiguousModule(name: name, candidates: unique ? names : prefixed.map(\.path))
        }
        var available: [String] = []
        for module in modules where module.hasExecutableMapping && !available.contains(module.name) {
            available.append(module.name)
        }
        throw GraftError.moduleNotFound(name: name, available: available)
    }

    public func module(containing address: UInt64) -> LoadedModule? {
        modules.first { $0.contains(address) }
    }

    public func mapping(containing address: UInt64) -> Mapping? {
        mappings.first { $0.contains(address) }
    }

    // MARK: - Resolution

    /// Resolves a location to a runtime address. Only function symbols (FUNC, IFUNC) are considered;
    /// an IFUNC resolves to its resolver, as in the symbol table.
    ///
    /// - `NAME`: every module with code; modules whose file cannot be read are skipped. Defined at
    ///   different addresses in several modules: `ambiguousSymbol` with `MODULE:NAME` candidates.
    /// - `MODULE:NAME`: only that module; an unreadable file is an error.
    /// - `0xADDRESS`: symbolized; the symbol may be nil.
    /// Not found: `symbolNotFound` with up to five suggestions.
    public func resolve(_ location: Location) throws -> ResolvedLocation {
        let offset = UInt64(location.offset)
        switch location.base {
        case .address(let base):
            let (address, overflow) = base.addingReportingOverflow(offset)
            if overflow { throw GraftError.invalidLocation(text: location.description, reason: "address plus offset does not fit in 64 bits") }
            return symbolize(address) ?? ResolvedLocation(address: address, module: nil, symbol: nil, symbolAddress: nil)
        case .symbol(let moduleName?, let name):
            let module: LoadedModule
            do {
                module = try self.module(named: moduleName)
            } catch GraftError.moduleNotFound(let missing, let available) {
                // Go 1.21+ names contain a colon (`type:.eq.main.T`): try the whole text as a name.
                if let found = try? resolveBare(moduleName + ":" + name, offset: offset, location: location) {
                    return found
                }
                throw GraftError.moduleNotFound(name: missing, available: available)
            }
            let elf = try module.elf()
            let symbols = elf.symbols(named: name) + (name.hasSuffix("@plt") ? elf.pltSymbols.filter { $0.name == name } : [])
            if symbols.isEmpty, let found = try resolveSourceName(name, in: [module], offset: offset, location: location) {
                return found
            }
            guard !symbols.isEmpty else {
                let close = Suggestions.best(for: name, among: elf.functionSymbols.map(\.name))
                if !elf.hasSymtab { throw GraftError.symbolNotFoundStripped(name: name, module: module.name, suggestions: close) }
                throw GraftError.symbolNotFound(name: name, module: module.name, suggestions: close)
            }
            let symbol = try choose(symbols, in: module, name: name)
            return try located(symbol, in: module, offset: offset, location: location)
        case .symbol(nil, let name):
            // `MODULE+0xOFF` first when no module has a function of that name: the failed lookup's
            // suggestions would scan every symbol of every module.
            if let module = try? self.module(named: name), module.start > 0,
               !modules.contains(where: { $0.hasExecutableMapping && ((try? $0.elf())?.symbols(named: name).isEmpty == false) }) {
                let address = module.start &+ offset
                return symbolize(address) ?? ResolvedLocation(address: address, module: module, symbol: nil, symbolAddress: nil)
            }
            do {
                return try resolveBare(name, offset: offset, location: location)
            } catch let error as GraftError {
                // `MODULE+0xOFF`, as graft prints code without a symbol: the module's first
                // mapped byte plus OFF (`MODULE+0` too: the module's first byte).
                switch error {
                case .symbolNotFound, .symbolNotFoundStripped:
                    if let module = try? self.module(named: name), module.start > 0 {
                        let address = module.start &+ offset
                        return symbolize(address) ?? ResolvedLocation(address: address, module: module, symbol: nil, symbolAddress: nil)
                    }
                default: break
                }
                throw error
            }
        }
    }

    private func resolveBare(_ name: String, offset: UInt64, location: Location) throws -> ResolvedLocation {
        var hits: [(module: LoadedModule, symbol: ELFSymbol)] = []
        for module in modules where module.hasExecutableMapping {
            guard let elf = try? module.elf() else { continue }
            // `function@plt`, as traces and backtraces name a PLT stub, is a location too.
            let symbols = elf.symbols(named: name) + (name.hasSuffix("@plt") ? elf.pltSymbols.filter { $0.name == name } : [])
            if !symbols.isEmpty { hits.append((module, try choose(symbols, in: module, name: name))) }
        }
        if hits.isEmpty, let found = try resolveSourceName(name, in: modules, offset: offset, location: location) {
            return found
        }
        guard let first = hits.first else {
            var names: [String] = []
            for module in modules where module.hasExecutableMapping {
                if let elf = try? module.elf() { names.append(contentsOf: elf.functionSymbols.map(\.name)) }
            }
            let close = Suggestions.best(for: name, among: names)
            // The program itself stripped: what the user looks for is most likely in it, unnamed.
            if let program = modules.first, program.hasExecutableMapping, let elf = try? program.elf(), !elf.hasSymtab {
                throw GraftError.symbolNotFoundStripped(name: name, module: program.name, suggestions: close)
            }
            throw GraftError.symbolNotFound(name: name, module: nil, suggestions: close)
        }
        var seen: Set<UInt64> = []
        let distinct = hits.filter { seen.insert($0.module.runtimeAddress($0.symbol)).inserted }
        if distinct.count > 1 {
            let fileNames = distinct.map(\.module.name)
            let unique = Set(fileNames).count == fileNames.count
            throw GraftError.ambiguousSymbol(name: name, candidates: distinct.map {
                "\(unique ? $0.module.name : $0.module.path):\(name)"
            })
        }
        return try located(first.symbol, in: first.module, offset: offset, location: location)
    }

    /// A C++/Rust function by its source name (`shapes::Circle::area() const`, or without the
    /// parameter list when that is unique: `shapes::Circle::area`), among `candidates`' mangled
    /// (`_Z`) function symbols; nil when the name cannot be one or nothing matches. Overloads are
    /// `ambiguousSymbol` with each candidate's full name.
    private func resolveSourceName(_ name: String, in candidates: [LoadedModule], offset: UInt64, location: Location) throws -> ResolvedLocation? {
        guard name.contains("::") || name.contains("(") else { return nil }
        var hits: [(module: LoadedModule, symbol: ELFSymbol, full: String)] = []
        for module in candidates where module.hasExecutableMapping {
            guard let elf = try? module.elf() else { continue }
            for (full, symbols) in elf.demangledFunctions where full == name || (!name.contains("(") && full.hasPrefix(name + "(")) {
                for symbol in symbols { hits.append((module, symbol, full)) }
            }
        }
        var seen: Set<UInt64> = []
        let distinct = hits.filter { seen.insert($0.module.runtimeAddress($0.symbol)).inserted }
        guard let first = distinct.first else { return nil }
        if distinct.count > 1 {
            throw GraftError.ambiguousSymbol(name: name, candidates: distinct.map { "\($0.module.name):\($0.symbol.name) (\($0.full))" })
        }
        return try located(first.symbol, in: first.module, offset: offset, location: location)
    }

    /// One symbol among same-named ones in one module: the only address, else the only global
    /// default-version one, else the only global one; otherwise ambiguous (C `static` functions of the
    /// same name in several files), listing addresses the user can type.
    private func choose(_ symbols: [ELFSymbol], in module: LoadedModule, name: String) throws -> ELFSymbol {
        func distinctValues(_ list: [ELFSymbol]) -> Int { Set(list.map(\.value)).count }
        if distinctValues(symbols) == 1 { return symbols[0] }
        let best = symbols.filter { $0.isGlobal && $0.isDefaultVersion }
        if !best.isEmpty && distinctValues(best) == 1 { return best[0] }
        let global = symbols.filter(\.isGlobal)
        if !global.isEmpty && distinctValues(global) == 1 { return global[0] }
        var seen: Set<UInt64> = []
        let candidates = symbols.sorted { $0.value < $1.value }.filter { seen.insert($0.value).inserted }.map {
            "\(hex(module.runtimeAddress($0))) (\(module.name):\($0.versionedName)\($0.isGlobal ? "" : ", file-local"))"
        }
        throw GraftError.ambiguousSymbol(name: name, candidates: candidates)
    }

    private func located(_ symbol: ELFSymbol, in module: LoadedModule, offset: UInt64, location: Location) throws -> ResolvedLocation {
        let start = module.runtimeAddress(symbol)
        let (address, overflow) = start.addingReportingOverflow(offset)
        if overflow { throw GraftError.invalidLocation(text: location.description, reason: "address plus offset does not fit in 64 bits") }
        return ResolvedLocation(address: address, module: module, symbol: symbol, symbolAddress: start)
    }

    /// The module and function symbol containing runtime `address`; nil when no mapped file holds it
    /// (anonymous memory, `[vdso]`). The symbol is nil when the file cannot be read or no function
    /// symbol covers the address.
    public func symbolize(_ address: UInt64) -> ResolvedLocation? {
        guard let module = module(containing: address) else { return nil }
        guard let elf = try? module.elf(),
              let symbol = elf.symbol(containing: module.linkAddress(address)) ?? elf.pltSymbol(containing: module.linkAddress(address)) else {
            let link = module.linkAddress(address)
            let range = (try? module.elf())?.unwindFunction(containing: link).map {
                CodeRange(start: address &- (link &- $0.start), size: $0.size)
            }
            return ResolvedLocation(address: address, module: module, symbol: nil, symbolAddress: nil, unnamedFunction: range)
        }
        return ResolvedLocation(address: address, module: module, symbol: symbol, symbolAddress: module.runtimeAddress(symbol))
    }

    /// Every function whose name matches the fnmatch(3) `glob` (nil: all) in every readable module
    /// with code, sorted by runtime address (then name).
    /// Functions whose name matches `pattern`, a glob, optionally `MODULE:GLOB` (MODULE as in a
    /// LOCATION: the file's basename or a prefix of it; `ns::f*` has no module).
    public func functions(matching pattern: String?) throws -> [ResolvedLocation] {
        var glob = pattern
        var only: LoadedModule?
        if let pattern, let colon = Location.singleColon(in: pattern[...]) {
            only = try module(named: String(pattern[..<colon]))
            glob = String(pattern[pattern.index(after: colon)...])
            if glob?.isEmpty == true { glob = nil }
        }
        var result: [ResolvedLocation] = []
        for module in modules where module.hasExecutableMapping && (only == nil || module === only) {
            guard let elf = try? module.elf() else { continue }
            for symbol in elf.functionSymbols where glob.map({ fnmatch($0, symbol.name, 0) == 0 || (Demangler.isMangled(symbol.name) && fnmatch($0, SymbolNames.demangled(symbol.name), 0) == 0) }) ?? true {
                let start = module.runtimeAddress(symbol)
                result.append(ResolvedLocation(address: start, module: module, symbol: symbol, symbolAddress: start))
            }
        }
        result.sort { $0.address != $1.address ? $0.address < $1.address : ($0.symbol?.name ?? "") < ($1.symbol?.name ?? "") }
        return result
    }
}

/// "Did you mean" candidates: same name in another case, then small edit distances (with
/// transpositions: `getpdi` -> `getpid`), then names containing the query or contained in it.
public enum Suggestions {
    public static func best(for query: String, among names: [String], limit: Int = 5) -> [String] {
        let q = Array(query.lowercased().utf8)
        guard !q.isEmpty else { return [] }
        let maxDistance = max(1, min(3, q.count / 3))
        var scored: [(category: Int, metric: Int, name: String)] = []
        var seen: Set<String> = []
        for name in names where seen.insert(name).inserted && name != query {
            let c = Array(name.lowercased().utf8)
            if c == q { scored.append((0, 0, name)); continue }
            if abs(c.count - q.count) <= maxDistance {
                let d = distance(q, c, limit: maxDistance)
                if d <= maxDistance { scored.append((1, d, name)); continue }
            }
            // One name inside the other only as its first or last whole word (`main` in
            // `__libc_start_main` and `main.main`; not in `textdomain`, `getdomainname` or
            // `_IO_switch_to_main_wget_area`).
            if min(c.count, q.count) >= 3, containsWord(c, q) || containsWord(q, c) {
                scored.append((2, abs(c.count - q.count), name))
            }
        }
        scored.sort {
            ($0.category, $0.metric, $0.name.utf8.count, $0.name) < ($1.category, $1.metric, $1.name.utf8.count, $1.name)
        }
        return scored.prefix(limit).map(\.name)
    }

    /// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions); returns
    /// `limit + 1` as soon as every entry of a row exceeds `limit`.
    static func distance(_ a: [UInt8], _ b: [UInt8], limit: Int) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous2 = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            var rowMin = current[0]
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                var value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    value = min(value, previous2[j - 2] + 1)
                }
                current[j] = value
                rowMin = min(rowMin, value)
            }
            if rowMin > limit { return limit + 1 }
            (previous2, previous, current) = (previous, current, previous2)
        }
        return previous[b.count]
    }

    /// `needle` occurs in `haystack` as its first or last word: no letter or digit right before or
    /// after it, and nothing but underscores before it or nothing after it.
    static func containsWord(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        if needle.isEmpty { return true }
        func isWordByte(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            let end = start + needle.count
            guard Array(haystack[start..<end]) == needle else { continue }
            if start > 0, isWordByte(haystack[start - 1]), isWordByte(needle[0]) { continue }
            if end < haystack.count, isWordByte(haystack[end]), isWordByte(needle[needle.count - 1]) { continue }
            if end == haystack.count || haystack[..<start].allSatisfy({ $0 == 0x5f }) { return true }
        }
        return false
    }
}
