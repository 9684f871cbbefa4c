import ArgumentParser

/// The value of `-p`/`--pid`. Options of this type parse their value unconditionally, so `-p -1`
/// reaches graft instead of being taken for an option (swift-argument-parser would say "Missing
/// value for '-p <pid>'"), and `check()`, called by every command's `validate()`, names what is
/// wrong with it.
struct ProcessID: ExpressibleByArgument {
    let text: String
    /// nil when `text` is not a positive 32-bit number (`check()` throws then).
    let value: Int32?

    init?(argument: String) {
        text = argument
        let digits = argument.hasPrefix("+") ? argument.dropFirst() : argument[...]
        let isNumber = !digits.isEmpty && digits.allSatisfy { $0.isASCII && $0.isNumber }
        value = isNumber ? Int32(digits).flatMap { $0 > 0 ? $0 : nil } : nil
    }

    /// The command-line error for `-p TEXT` (or another option holding an id: `--tid`, "a thread
    /// id"), if TEXT is not a positive 32-bit number.
    func check(option: String = "-p", what: String = "a process id") throws {
        guard value == nil else { return }
        let digits = text.hasPrefix("+") ? text.dropFirst() : text[...]
        if !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), digits.contains(where: { $0 != "0" }) {
            throw ValidationError("\(option) \(text): too large for \(what) (at most \(Int32.max))")
        }
        throw ValidationError("\(option) \(text): \(what) is a positive number")
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
