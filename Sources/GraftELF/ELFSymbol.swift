import GraftCore

/// What an ELF symbol names (`STT_*` in elf(5)).
public enum SymbolKind: Sendable {
    /// `STT_FUNC`: code starting at the symbol's value.
    case function
    /// `STT_GNU_IFUNC`: the value is the *resolver*, which ld.so calls to choose the implementation.
    case ifunc
    /// `STT_OBJECT`: data.
    case object
    case other

    /// The kind of an `st_info` byte (its low four bits, `STT_*`).
    public init(symbolInfo info: UInt8) {
        switch info & 0xf {
        case 1: self = .object
        case 2: self = .function
        case 10: self = .ifunc
        default: self = .other
        }
    }
}

/// One entry of `.symtab` or `.dynsym` (`Elf64_Sym`).
public struct ELFSymbol: Sendable, Equatable, CustomStringConvertible {
    /// The name without any version suffix: `getpid`, not `getpid@@GLIBC_2.2.5`.
    public let name: String
    /// Link-time virtual address (`st_value`); add the module's load bias for the runtime address.
    public let value: UInt64
    /// `st_size` in bytes; 0 when the producer did not record it (hand-written assembly, some PLT stubs).
    public let size: UInt64
    public let kind: SymbolKind
    /// `STB_GLOBAL`, `STB_WEAK` or `STB_GNU_UNIQUE`; false for `STB_LOCAL` (C `static`).
    public let isGlobal: Bool
    /// From `.dynsym` (survives `strip`), rather than `.symtab`.
    public let fromDynsym: Bool
    /// The symbol version from `.gnu.version_d` (`GLIBC_2.2.5`), nil when unversioned.
    public let version: String?
    /// False for a hidden, non-default version (`name@VERSION`, kept for old binaries); true for
    /// `name@@VERSION` and for unversioned symbols. Lookups by bare name prefer default versions.
    public let isDefaultVersion: Bool

    public init(name: String, value: UInt64, size: UInt64, kind: SymbolKind, isGlobal: Bool, fromDynsym: Bool,
                version: String? = nil, isDefaultVersion: Bool = true) {
        self.name = name
        self.value = value
        self.size = size
        self.kind = kind
        self.isGlobal = isGlobal
        self.fromDynsym = fromDynsym
        self.version = version
        self.isDefaultVersion = isDefaultVersion
    }

    /// One past the last byte (`value + size`).
    public var end: UInt64 { value &+ size }

    /// Whether `vaddr` (link-time) lies inside the symbol. A size-0 symbol covers nothing.
    public func contains(_ vaddr: UInt64) -> Bool { size > 0 && vaddr >= value && vaddr - value < size }

    /// The name as readelf prints it: `getpid@@GLIBC_2.2.5`, `memcpy@GLIBC_2.2.5`, or `main`.
    public var versionedName: String {
        guard let version else { return name }
        return name + (isDefaultVersion ? "@@" : "@") + version
    }

    public var description: String { "\(versionedName) \(hex(value)) size \(size)" }

    /// Orders aliases of one address for display: the name a person would write comes first
    /// (`getpid` before `__getpid`, a global before a file-local, the default version before old ones).
    static func preferred(_ a: ELFSymbol, _ b: ELFSymbol) -> Bool {
        if a.isGlobal != b.isGlobal { return a.isGlobal }
        if a.isDefaultVersion != b.isDefaultVersion { return a.isDefaultVersion }
        if (a.kind == .function) != (b.kind == .function) { return a.kind == .function }
        let ua = a.name.prefix(while: { $0 == "_" }).count, ub = b.name.prefix(while: { $0 == "_" }).count
        if ua != ub { return ua < ub }
        if a.name.utf8.count != b.name.utf8.count { return a.name.utf8.count < b.name.utf8.count }
        if a.name != b.name { return a.name < b.name }
        return a.fromDynsym && !b.fromDynsym
    }
}
