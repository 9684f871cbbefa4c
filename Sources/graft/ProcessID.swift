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
    /// id"), if TEXT is not a positive 32-bit number. A list (`-p 8153,8293`) where one process is
    /// meant says so.
    func check(option: String = "-p", what: String = "a process id") throws {
        guard value == nil else { return }
        if option == "-p", text.contains(where: { $0 == "," || $0 == " " }),
           ProcessIDList(argument: text)?.items.allSatisfy({ $0.value != nil }) == true {
            throw ValidationError("\(option) \(text): this command works on one process; give one pid")
        }
        let digits = text.hasPrefix("+") ? text.dropFirst() : text[...]
        if !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), digits.contains(where: { $0 != "0" }) {
            throw ValidationError("\(option) \(text): too large for \(what) (at most \(Int32.max))")
        }
        throw ValidationError("\(option) \(text): \(what) is a positive number")
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// The value of `-p` where several processes may be named: `8153`, `8153,8293` or `"8153 8293"`
/// (the option may also be repeated).
struct ProcessIDList: ExpressibleByArgument {
    let text: String
    let items: [ProcessID]

    init?(argument: String) {
        text = argument
        let parts = argument.split(whereSeparator: { $0 == "," || $0 == " " })
        items = parts.isEmpty ? [ProcessID(argument: argument)!] : parts.map { ProcessID(argument: String($0))! }
    }

    func check() throws {
        for item in items { try item.check() }
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
