import ArgumentParser

/// A signed 64-bit value given on the command line: decimal or 0x hex, with an optional minus
/// (`-1`, `0x2a`, `-0x10`), or an unsigned 64-bit hex or decimal value taken as its bit pattern
/// (`0xffffffffffffffff` is -1). Options of this type parse their value unconditionally, so
/// `--return -1` works as well as `--return=-1`.
struct Integer64: ExpressibleByArgument {
    let value: Int64

    init?(argument: String) {
        var text = Substring(argument)
        let negative = text.hasPrefix("-")
        if negative || text.hasPrefix("+") { text = text.dropFirst() }
        let hex = text.hasPrefix("0x") || text.hasPrefix("0X")
        let digits = hex ? text.dropFirst(2) : text
        // Digits only: UInt64(_:radix:) would take another sign itself (`-+5`, `0x+5`).
        guard let first = digits.first, first.isHexDigit, let magnitude = UInt64(digits, radix: hex ? 16 : 10) else { return nil }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            value = magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        } else {
            value = Int64(bitPattern: magnitude)
        }
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
