import CGraftShim
import Glibc

/// Source names of mangled symbols, from the toolchains' own demanglers (not hand-written):
/// binutils' libiberty `rust_demangle` for Rust (v0 `_R…`, and legacy `_ZN…17h<hash>E` without the
/// hash), libstdc++'s `__cxa_demangle` for C++ (Itanium), the Swift runtime's `swift_demangle` for
/// Swift (`$s…`).
public enum Demangler {
    /// `Circle::area() const` for `_ZNK6Circle4areaEv`, `main.price(Swift.Int) -> Swift.Int` for
    /// `$s4main5priceyS2iF`, `shapes::area` for `_RNvCs1234_6shapes4area`; nil when `name` is not a
    /// mangled name graft knows.
    public static func demangle(_ name: String) -> String? {
        guard isMangled(name) else { return nil }
        let raw: UnsafeMutablePointer<CChar>?
        if name.hasPrefix("_R") {
            raw = graft_rust_demangle(name)
        } else if name.hasPrefix("_Z") {
            // Rust's legacy mangling is Itanium-shaped: libiberty knows it by its hash and drops it.
            raw = graft_rust_demangle(name) ?? graft_demangle(name)
        } else {
            raw = graft_swift_demangle(name)
        }
        guard let raw else { return nil }
        defer { free(raw) }
        let text = String(cString: raw)
        return text == name ? nil : text
    }

    /// Itanium (`_Z`), Rust v0 (`_R`) or Swift (`$s`, `_$s`, `$S`, `_T0`) mangling.
    public static func isMangled(_ name: String) -> Bool {
        name.hasPrefix("_Z") || name.hasPrefix("_R") || name.hasPrefix("$s") || name.hasPrefix("_$s") || name.hasPrefix("$S") || name.hasPrefix("_T0")
    }

    /// The Itanium nested name of a class as `_ZTV`/`_ZTI` take it: `6Circle`, `N6shapes6CircleE`
    /// for `shapes::Circle`. nil for a name with template arguments or anything but identifiers.
    public static func mangleClassName(_ name: String) -> String? {
        var parts: [String] = []
        var rest = Substring(name)
        while let range = rest.firstRange(of: "::") {
            parts.append(String(rest[..<range.lowerBound]))
            rest = rest[range.upperBound...]
        }
        parts.append(String(rest))
        guard !parts.isEmpty, parts.allSatisfy({ part in
            !part.isEmpty && part.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" } && !(part.first?.isNumber ?? true)
        }) else { return nil }
        let encoded = parts.map { "\($0.utf8.count)\($0)" }.joined()
        return parts.count == 1 ? encoded : "N\(encoded)E"
    }
}

/// How graft prints a function's name: demangled (C++, Rust legacy) unless `--mangled` asked for the
/// linkage names. Demangled names are cached: backtraces and traces print the same ones again.
public enum SymbolNames {
    private static let state = Locked((mangled: false, cache: [String: String]()))

    /// `--mangled`: print linkage names.
    public static var mangled: Bool {
        get { state.withLock { $0.mangled } }
        set { state.withLock { $0.mangled = newValue } }
    }

    /// `name` as graft prints it.
    public static func display(_ name: String) -> String {
        mangled ? name : demangled(name)
    }

    /// `name` demangled whatever `--mangled` says (for matching patterns and source names).
    public static func demangled(_ name: String) -> String {
        guard Demangler.isMangled(name) else { return name }
        if let known = state.withLock({ $0.cache[name] }) { return known }
        let demangled = Demangler.demangle(name) ?? name
        state.withLock { state in
            if state.cache.count > 100_000 { state.cache.removeAll() }
            state.cache[name] = demangled
        }
        return demangled
    }
}

extension ELFSymbol {
    /// The name as graft prints it: demangled unless `--mangled` (`SymbolNames`).
    public var displayName: String { SymbolNames.display(name) }
}
