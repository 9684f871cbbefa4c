import ArgumentParser
import GraftKit

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
        // The LOCATION grammar's numbers: digits only, so a second sign (`-+5`, `0x+5`) is refused.
        guard let magnitude = Location.parseNumber(text) else { return nil }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            value = magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        } else {
            value = Int64(bitPattern: magnitude)
        }
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
