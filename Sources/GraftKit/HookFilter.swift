import GraftCore

/// A value a filter compares: an integer (registers are read as two's-complement 64-bit) or a
/// string (a decoded `char *` argument, an enumerator, decoded flags).
public enum HookFilterValue: Sendable, Equatable {
    case integer(Int64)
    case string(String)
    /// A value shown by a name that stands for a number (decoded flags `O_RDONLY|O_CLOEXEC`, an
    /// enumerator `GREEN`, an output buffer's pointer at the call): its text against a string, its
    /// number against a number.
    case named(String, Int64)
}

/// The fields of one call a filter can look at. `HookHit` + its return give tid, pid, the return
/// value and the raw integer arguments; typed arguments (names from debug information) plug in
/// through `value(named:)`.
public protocol HookFilterFields {
    var tid: Int32 { get }
    var pid: Int32 { get }
    /// rax at the return; nil when the return is not known (yet).
    var returnValue: UInt64? { get }
    /// The i-th raw integer argument, if it was read.
    func argument(_ index: Int) -> UInt64?
    /// A named parameter's value (typed arguments), nil when unknown.
    func value(named name: String) -> HookFilterValue?
}

extension HookFilterFields {
    public func value(named name: String) -> HookFilterValue? { nil }
}

/// `--filter EXPR`: which calls of a hook session are kept. Evaluated in graft, on each call's
/// fields, never in the target.
///
/// Grammar (docs/hooks.md):
///
///     expr       := and ( "||" and )*
///     and        := unary ( "&&" unary )*
///     unary      := "!" unary | "(" expr ")" | comparison
///     comparison := operand ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) operand
///     operand    := field | number | string
///     field      := tid | pid | ret | arg0 … arg15 | NAME (a parameter name, with typed arguments)
///     number     := [-] decimal digits | [-] 0x hex digits
///     string     := "…" | '…'   (\" \' \\ \n \t escapes)
///
/// Integers compare as signed 64-bit (`ret < 0` catches -1; 0xffffffffffffffff is -1). Strings
/// compare only with named values. A comparison whose field is unknown for a call is false.
public struct HookFilter: Sendable, CustomStringConvertible {
    public indirect enum Node: Sendable, Equatable {
        case or(Node, Node)
        case and(Node, Node)
        case not(Node)
        case compare(Operand, Comparison, Operand)
    }

    public enum Operand: Sendable, Equatable {
        case tid, pid, ret
        case argument(Int)
        case name(String)
        case literal(HookFilterValue)
    }

    public enum Comparison: String, Sendable, CaseIterable {
        case equal = "==", notEqual = "!=", lessOrEqual = "<=", less = "<", greaterOrEqual = ">=", greater = ">"
    }

    public let text: String
    public let root: Node

    public var description: String { text }

    /// The highest raw argument index the filter reads (nil: none): arguments up to it must be read.
    public var highestArgument: Int? {
        operands.compactMap { if case .argument(let i) = $0 { return i } else { return nil } }.max()
    }

    /// The filter needs the return value: a call is decided only when it returns.
    public var usesReturnValue: Bool { operands.contains(.ret) }

    /// Parameter names the filter uses.
    public var names: [String] {
        operands.compactMap { if case .name(let n) = $0 { return n } else { return nil } }
    }

    private var operands: [Operand] {
        var out: [Operand] = []
        func walk(_ node: Node) {
            switch node {
            case .or(let a, let b), .and(let a, let b): walk(a); walk(b)
            case .not(let a): walk(a)
            case .compare(let l, _, let r): out.append(l); out.append(r)
            }
        }
        walk(root)
        return out
    }

    /// The most raw arguments a hook reads (`--args` takes 0 to 16).
    public static let maxArguments = 16

    /// Parses `text`; a mistake is one line naming the column: `--filter 'tid = 4': expected ==, !=,
    /// <, <=, > or >= at column 5 ('= 4')`.
    public init(parsing text: String) throws {
        var parser = Parser(text: text)
        self.text = text
        self.root = try parser.parseAll()
    }

    /// Whether the call with `fields` is kept.
    public func matches(_ fields: some HookFilterFields) -> Bool {
        evaluate(root, fields)
    }

    private func evaluate(_ node: Node, _ fields: some HookFilterFields) -> Bool {
        switch node {
        case .or(let a, let b): return evaluate(a, fields) || evaluate(b, fields)
        case .and(let a, let b): return evaluate(a, fields) && evaluate(b, fields)
        case .not(let a): return !evaluate(a, fields)
        case .compare(let l, let op, let r):
            guard let left = value(l, fields), let right = value(r, fields) else { return false }
            switch (left, right) {
            case (.integer(let a), .integer(let b)), (.named(_, let a), .integer(let b)), (.integer(let a), .named(_, let b)),
                 (.named(_, let a), .named(_, let b)):
                return Self.compare(a, op, b)
            case (.string(let a), .string(let b)), (.named(let a, _), .string(let b)), (.string(let a), .named(let b, _)):
                return Self.compare(a, op, b)
            default: return false
            }
        }
    }

    private func value(_ operand: Operand, _ fields: some HookFilterFields) -> HookFilterValue? {
        switch operand {
        case .tid: return .integer(Int64(fields.tid))
        case .pid: return .integer(Int64(fields.pid))
        case .ret: return fields.returnValue.map { .integer(Int64(bitPattern: $0)) }
        case .argument(let i): return fields.argument(i).map { .integer(Int64(bitPattern: $0)) }
        case .name(let name): return fields.value(named: name)
        case .literal(let v): return v
        }
    }

    private static func compare<T: Comparable>(_ a: T, _ op: Comparison, _ b: T) -> Bool {
        switch op {
        case .equal: return a == b
        case .notEqual: return a != b
        case .less: return a < b
        case .lessOrEqual: return a <= b
        case .greater: return a > b
        case .greaterOrEqual: return a >= b
        }
    }

    // MARK: - Parsing

    private struct Parser {
        let text: String
        let chars: [Character]
        var position = 0

        init(text: String) {
            self.text = text
            self.chars = Array(text)
        }

        func fail(_ what: String, at column: Int? = nil) -> GraftError {
            let at = column ?? position
            let rest = at < chars.count ? " ('\(String(chars[at...].prefix(20)))')" : " (the end)"
            return GraftError.usage("--filter '\(text)': \(what) at column \(at + 1)\(rest)")
        }

        mutating func skipSpaces() {
            while position < chars.count, chars[position].isWhitespace { position += 1 }
        }

        mutating func take(_ token: String) -> Bool {
            skipSpaces()
            let t = Array(token)
            guard position + t.count <= chars.count, Array(chars[position..<position + t.count]) == t else { return false }
            position += t.count
            return true
        }

        mutating func parseAll() throws -> Node {
            skipSpaces()
            if position >= chars.count { throw fail("empty expression: give a comparison such as 'tid == 4243' or 'arg0 > 2'") }
            let node = try parseOr()
            skipSpaces()
            if position < chars.count {
                throw fail(chars[position] == ")" ? "unbalanced ')'" : "expected && or || or the end")
            }
            return node
        }

        mutating func parseOr() throws -> Node {
            var node = try parseAnd()
            while take("||") { node = .or(node, try parseAnd()) }
            return node
        }

        mutating func parseAnd() throws -> Node {
            var node = try parseUnary()
            while take("&&") { node = .and(node, try parseUnary()) }
            return node
        }

        mutating func parseUnary() throws -> Node {
            skipSpaces()
            if position < chars.count, chars[position] == "!", position + 1 >= chars.count || chars[position + 1] != "=" {
                position += 1
                return .not(try parseUnary())
            }
            if take("(") {
                let open = position - 1
                let node = try parseOr()
                guard take(")") else { throw fail("expected ')' to close the '(' of column \(open + 1),") }
                return node
            }
            return try parseComparison()
        }

        mutating func parseComparison() throws -> Node {
            let leftAt = position
            let left = try parseOperand()
            skipSpaces()
            let opAt = position
            guard let op = Comparison.allCases.first(where: { take($0.rawValue) }) else {
                throw fail("expected ==, !=, <, <=, > or >=", at: opAt)
            }
            skipSpaces()
            let rightAt = position
            let right = try parseOperand()
            if case .literal = left, case .literal = right {
                throw fail("a comparison needs a field (tid, pid, ret, arg0…arg15 or a parameter name)", at: leftAt)
            }
            for (operand, other, at) in [(left, right, leftAt), (right, left, rightAt)] {
                guard case .literal(.string) = operand else { continue }
                switch other {
                case .tid, .pid, .ret, .argument:
                    throw fail("a string compares only with a named parameter, not with an integer field", at: at)
                default: break
                }
            }
            return .compare(left, op, right)
        }

        mutating func parseOperand() throws -> Operand {
            skipSpaces()
            guard position < chars.count else { throw fail("expected a field, a number or a string") }
            let c = chars[position]
            if c == "\"" || c == "'" { return .literal(.string(try parseString(quote: c))) }
            if c.isNumber || (c == "-" && position + 1 < chars.count && chars[position + 1].isNumber) {
                return .literal(.integer(try parseNumber()))
            }
            guard c.isLetter || c == "_" else { throw fail("expected a field, a number or a string") }
            let start = position
            while position < chars.count, chars[position].isLetter || chars[position].isNumber || chars[position] == "_" || chars[position] == "." {
                position += 1
            }
            let word = String(chars[start..<position])
            switch word {
            case "tid": return .tid
            case "pid": return .pid
            case "ret": return .ret
            default:
                if word.hasPrefix("arg"), let i = Int(word.dropFirst(3)), String(i) == word.dropFirst(3) {
                    guard i < HookFilter.maxArguments else {
                        throw fail("\(word): arguments go from arg0 to arg\(HookFilter.maxArguments - 1)", at: start)
                    }
                    return .argument(i)
                }
                return .name(word)
            }
        }

        mutating func parseNumber() throws -> Int64 {
            let start = position
            let negative = chars[position] == "-"
            if negative { position += 1 }
            var digits = ""
            var radix = 10
            if position + 1 < chars.count, chars[position] == "0", chars[position + 1] == "x" || chars[position + 1] == "X" {
                radix = 16
                position += 2
            }
            while position < chars.count, chars[position].isHexDigit, radix == 16 || chars[position].isNumber {
                digits.append(chars[position])
                position += 1
            }
            if position < chars.count, chars[position].isLetter || chars[position] == "_" {
                throw fail("not a number (decimal, or hex with 0x)", at: start)
            }
            guard !digits.isEmpty else { throw fail("not a number (decimal, or hex with 0x)", at: start) }
            guard let magnitude = UInt64(digits, radix: radix) else {
                throw fail("\(negative ? "-" : "")\(radix == 16 ? "0x" : "")\(digits) does not fit in 64 bits", at: start)
            }
            // Hex is a bit pattern (0xffffffffffffffff is -1); decimal must fit a signed 64-bit value.
            if radix == 10 && magnitude > UInt64(Int64.max) + (negative ? 1 : 0) {
                throw fail("\(negative ? "-" : "")\(digits) does not fit in 64 bits", at: start)
            }
            let value = Int64(bitPattern: magnitude)
            return negative ? 0 &- value : value
        }

        mutating func parseString(quote: Character) throws -> String {
            let start = position
            position += 1
            var out = ""
            while position < chars.count {
                let c = chars[position]
                position += 1
                if c == quote { return out }
                if c == "\\" {
                    guard position < chars.count else { break }
                    let e = chars[position]
                    position += 1
                    switch e {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "\\", "\"", "'": out.append(e)
                    default: throw fail("unknown escape '\\\(e)' (use \\\" \\' \\\\ \\n \\t)", at: position - 2)
                    }
                    continue
                }
                out.append(c)
            }
            throw fail("unterminated string", at: start)
        }
    }
}
