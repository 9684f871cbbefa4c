import CGraftShim
import Glibc

/// Source names of mangled symbols, from the toolchain's demangler (libstdc++'s `__cxa_demangle`):
/// C++ (Itanium) and Rust's legacy mangling (`_ZN…17h<hash>E`). Not hand-written.
public enum Demangler {
    /// `Circle::area() const` for `_ZNK6Circle4areaEv`; nil when `name` is not an Itanium name.
    public static func demangle(_ name: String) -> String? {
        guard name.hasPrefix("_Z") else { return nil }
        guard let raw = graft_demangle(name) else { return nil }
        defer { free(raw) }
        return String(cString: raw)
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
