import GraftCore

/// What a user types to name code: `getpid`, `libc:getpid`, `main.a+0x4`, `0x401000`.
///
/// Grammar: `BASE [+ OFFSET]` where BASE is `NAME`, `MODULE:NAME` or `0xADDRESS`, and OFFSET is decimal
/// or `0x` hex. Names are raw symbol names and may contain `.`, `_`, `$`, `@`, `(`, `*`, `::`
/// (Go's `main.(*T).M`, `memcpy@GLIBC_2.2.5`, C++ `ns::f`). A `:` separates MODULE only when it is a
/// single colon (not part of `::`) and what precedes it looks like a file name.
public struct Location: Sendable, Equatable, CustomStringConvertible {
    public enum Base: Sendable, Equatable {
        /// `module` nil: search every module.
        case symbol(module: String?, name: String)
        case address(UInt64)
    }

    public let base: Base
    /// Bytes added to the base; never negative (the grammar only has `+`).
    public let offset: Int64

    public init(base: Base, offset: Int64 = 0) {
        self.base = base
        self.offset = offset
    }

    /// The canonical text: `libc:getpid+0x4`, `0x401000`.
    public var description: String {
        var text: String
        switch base {
        case .symbol(let module?, let name): text = "\(module):\(name)"
        case .symbol(nil, let name): text = name
        case .address(let address): text = hex(address)
        }
        if offset != 0 { text += "+" + hex(UInt64(offset)) }
        return text
    }

    public static func parse(_ text: String) throws -> Location {
        func invalid(_ reason: String) -> GraftError { .invalidLocation(text: text, reason: reason) }
        let trimmed = text.trimmingWhitespace
        guard !trimmed.isEmpty else { throw invalid("the location is empty") }
        if let bad = trimmed.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw invalid("it contains the control character U+\(String(bad.value, radix: 16, uppercase: true))")
        }

        // OFFSET: after the last '+', unless that '+' belongs to a module name (`libstdc++.so.6:f`).
        var baseText = trimmed
        var offset: Int64 = 0
        if let plus = trimmed.lastIndex(of: "+") {
            let after = trimmed[trimmed.index(after: plus)...].trimmingWhitespace
            if !after.contains(":") {
                baseText = trimmed[..<plus].trimmingWhitespace
                guard !after.isEmpty else { throw invalid("missing offset after '+'") }
                guard let value = parseNumber(after) else {
                    if isNumberSyntax(after) { throw invalid("offset '\(after)' does not fit in 64 bits") }
                    if after.hasPrefix("-") {
                        throw invalid("offsets cannot be negative; write the address or NAME+OFFSET")
                    }
                    throw invalid("'\(after)' is not an offset (use decimal digits or 0x followed by hex digits)")
                }
                guard value <= UInt64(Int64.max) else { throw invalid("offset '\(after)' is too large") }
                offset = Int64(value)
                guard !baseText.isEmpty else { throw invalid("missing function name or address before '+'") }
                if let other = baseText.lastIndex(of: "+"), !baseText[other...].contains(":") {
                    throw invalid("only one +OFFSET is allowed")
                }
            }
        }

        // MODULE!NAME, as graft prints it (`shapes!main`, `libc.so.6!getpid+0x4`): the same as
        // MODULE:NAME. Only when what precedes `!` looks like a file name (C++'s `operator!=` and
        // Go names keep their `!`).
        if let bang = baseText.firstIndex(of: "!"), bang != baseText.startIndex, baseText.index(after: bang) != baseText.endIndex,
           baseText[baseText.index(after: bang)] != "=",
           baseText[..<bang].allSatisfy({ $0.isLetter || $0.isNumber || "._-+".contains($0) }) {
            let name = baseText[baseText.index(after: bang)...].trimmingWhitespace
            try checkName(name, invalid)
            return Location(base: .symbol(module: String(baseText[..<bang]), name: String(name)), offset: offset)
        }

        // MODULE:NAME.
        if let colon = singleColon(in: baseText) {
            let module = baseText[..<colon].trimmingWhitespace
            let name = baseText[baseText.index(after: colon)...].trimmingWhitespace
            guard !module.isEmpty else { throw invalid("missing module name before ':'") }
            guard !name.isEmpty else { throw invalid("missing function name after '\(module):'") }
            try checkName(name, invalid)
            return Location(base: .symbol(module: String(module), name: String(name)), offset: offset)
        }
        if baseText.hasPrefix(":") && !baseText.hasPrefix("::") {
            throw invalid("missing module name before ':'")
        }

        // 0xADDRESS.
        if baseText.hasPrefix("0x") || baseText.hasPrefix("0X") {
            let digits = baseText.dropFirst(2)
            guard !digits.isEmpty else { throw invalid("'\(baseText)' has no hex digits after 0x") }
            // ASCII only: Character.isHexDigit also accepts fullwidth digits (`０`-`９`), which UInt64(_:radix:) does not.
            guard digits.allSatisfy(\.isASCIIHexDigit) else {
                throw invalid("'\(baseText)' is not a hexadecimal address (0x followed by the ASCII digits 0-9, a-f)")
            }
            guard let address = UInt64(digits, radix: 16) else {
                throw invalid("address '\(baseText)' does not fit in 64 bits")
            }
            guard address.addingReportingOverflow(UInt64(offset)).overflow == false else {
                throw invalid("address plus offset does not fit in 64 bits")
            }
            return Location(base: .address(address), offset: offset)
        }
        if let first = baseText.first, first.isASCII, first.isNumber {
            throw invalid("a function name cannot start with a digit; write addresses in hex with 0x")
        }
        try checkName(baseText, invalid)
        return Location(base: .symbol(module: nil, name: String(baseText)), offset: offset)
    }

    /// Decimal or `0x` hex, nothing else (no sign, no spaces, ASCII digits only); nil also when the
    /// value does not fit in 64 bits (`isNumberSyntax` tells the two apart).
    public static func parseNumber(_ text: Substring) -> UInt64? {
        guard isNumberSyntax(text) else { return nil }
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt64(text.dropFirst(2), radix: 16) }
        return UInt64(text)
    }

    /// Whether `text` is written as `parseNumber` reads numbers, whatever its size.
    public static func isNumberSyntax(_ text: Substring) -> Bool {
        if text.hasPrefix("0x") || text.hasPrefix("0X") {
            let digits = text.dropFirst(2)
            return !digits.isEmpty && digits.allSatisfy(\.isASCIIHexDigit)
        }
        return !text.isEmpty && text.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// The first ':' that is not part of '::' and whose prefix looks like a file name (letters, digits,
    /// `. _ - + @ /`; a path is allowed). `ns::f`, `main.(*T).M` and `std::vector<int>::size` do not split.
    static func singleColon(in text: Substring) -> Substring.Index? {
        var index = text.startIndex
        while index < text.endIndex {
            guard text[index] == ":" else { index = text.index(after: index); continue }
            let next = text.index(after: index)
            if next < text.endIndex && text[next] == ":" {
                // Skip the whole run of colons: `a:::b` is not a module split either.
                var skip = next
                while skip < text.endIndex && text[skip] == ":" { skip = text.index(after: skip) }
                index = skip
                continue
            }
            let prefix = text[..<index].trimmingWhitespace
            let looksLikeFile = !prefix.isEmpty && prefix.allSatisfy {
                $0.isLetter || $0.isNumber || "._-+@/~".contains($0)
            }
            return looksLikeFile ? index : nil
        }
        return nil
    }

    private static func checkName(_ name: Substring, _ invalid: (String) -> GraftError) throws(GraftError) {
        // A C++ signature has spaces (`area() const`, `f(int, char)`); nothing else may.
        if name.contains(where: { $0 == " " || $0 == "\t" }), !name.contains("(") {
            throw invalid("function names cannot contain spaces")
        }
        if name.hasPrefix("0x") || name.hasPrefix("0X"), name.dropFirst(2).allSatisfy(\.isASCIIHexDigit) {
            throw invalid("'\(name)' after a module is an address; write the address alone (0x...)")
        }
        if let dash = name.lastIndex(of: "-"), parseNumber(name[name.index(after: dash)...]) != nil,
           dash != name.startIndex {
            throw invalid("offsets cannot be negative or written with '-'; use NAME+OFFSET")
        }
    }
}

extension StringProtocol where SubSequence == Substring {
    var trimmingWhitespace: Substring {
        let s = self[...]
        guard let first = s.firstIndex(where: { !$0.isWhitespace }) else { return s[s.endIndex...] }
        let last = s.lastIndex(where: { !$0.isWhitespace })!
        return s[first...last]
    }
}

extension Character {
    /// 0-9, a-f, A-F; unlike `isHexDigit`, not their fullwidth forms.
    var isASCIIHexDigit: Bool { isASCII && isHexDigit }
}
