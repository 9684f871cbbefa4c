import GraftCore
import GraftELF

/// One argument (or result) as its type says to show it.
public enum ArgumentValue: Sendable, Equatable {
    case signed(Int64)
    case unsigned(UInt64)
    case boolean(Bool)
    /// A `char`.
    case character(UInt8)
    /// A `float` (`single`) or `double`.
    case floating(Double, single: Bool)
    /// A C string (or Go string) read from the target, at most `ArgumentDecoder.stringLimit` bytes:
    /// nil bytes when the address is NULL or unreadable; `truncated` when it went on.
    case string([UInt8]?, address: UInt64, truncated: Bool)
    case pointer(UInt64)
    /// An enum's value, by name when an enumerator has it.
    case enumerator(String?, Int64)
    /// An integer decoded by a table: `O_RDONLY|O_CLOEXEC`, `AF_INET`, `0644`, `{AF_INET, 127.0.0.1:80}`.
    case decoded(String, UInt64)
    /// A struct passed in memory (on the stack): where it is.
    case inMemory(UInt64)
    /// A small struct passed in registers: its 8-byte parts.
    case words([UInt64])
    /// A Go slice: data pointer, length, capacity.
    case slice(UInt64, length: UInt64, capacity: UInt64)
    /// A Go struct, field by field (`{X:1, Y:2}`); `more`: fields left out (`ArgumentValue.fieldLimit`).
    case fields([ArgumentField], more: Int)
    /// A Go array's elements (`[4, 5, 6]`); `more`: elements left out.
    case elements([ArgumentValue], more: Int)
    /// A complex number (Go's complex64 when `single`, complex128).
    case complex(Double, Double, single: Bool)
    /// A Go interface (an `error`…) holding nothing: both words 0.
    case goNil
    /// A value graft cannot place (a Go result after one whose type it cannot lay out): `?`.
    case unavailable(String)
    /// Nothing graft can decode: the register as it was.
    case raw(UInt64)
    /// The result of a `void` function.
    case void

    /// As `graft hook` prints it: `3`, `-1`, `"apple"`, `"long…"...`, `0x7ffd1230`, `RED`, `2.5`.
    public var text: String {
        switch self {
        case .signed(let v): return String(v)
        case .unsigned(let v): return String(v)
        case .boolean(let v): return v ? "true" : "false"
        case .character(let c): return "'" + ArgumentValue.escape([c], quote: UInt8(ascii: "'")) + "'"
        case .floating(let v, let single): return single ? String(Float(v)) : String(v)
        case .string(let bytes, let address, let truncated):
            guard let bytes else { return address == 0 ? "NULL" : hex(address) }
            return "\"" + ArgumentValue.escape(bytes, quote: UInt8(ascii: "\"")) + "\"" + (truncated ? "..." : "")
        case .pointer(let v): return v == 0 ? "NULL" : hex(v)
        case .enumerator(let name, let v): return name ?? String(v)
        case .decoded(let text, _): return text
        case .inMemory(let address): return "{…} at \(hex(address))"
        case .words(let words): return "{" + words.map { hex($0) }.joined(separator: ", ") + "}"
        case .slice(let address, let length, let capacity): return "[]{len=\(length), cap=\(capacity)} at \(hex(address))"
        case .fields(let fields, let more):
            return "{" + (fields.map { $0.name + ":" + $0.value.text } + (more > 0 ? ["…"] : [])).joined(separator: ", ") + "}"
        case .elements(let elements, let more):
            return "[" + (elements.map(\.text) + (more > 0 ? ["…"] : [])).joined(separator: ", ") + "]"
        case .complex(let re, let im, let single):
            let real = single ? String(Float(re)) : String(re), imaginary = single ? String(Float(im)) : String(im)
            return "(" + real + (im.sign == .minus || im.isNaN ? "" : "+") + imaginary + "i)"
        case .unavailable: return "?"
        case .goNil: return "nil"
        case .raw(let v): return hex(v)
        case .void: return "void"
        }
    }

    /// The most fields or elements of one Go struct or array shown (then `…`).
    public static let fieldLimit = 8

    /// The value as a number, for comparisons (`--filter 'qty > 2'`): integers, enums, decoded
    /// integers, pointers, floats; nil for strings and structs.
    public var number: Double? {
        switch self {
        case .signed(let v): return Double(v)
        case .unsigned(let v), .pointer(let v), .raw(let v), .decoded(_, let v): return Double(v)
        case .boolean(let v): return v ? 1 : 0
        case .character(let c): return Double(c)
        case .floating(let v, _): return v
        case .enumerator(_, let v): return Double(v)
        case .string, .inMemory, .words, .slice, .void, .fields, .elements, .complex, .unavailable, .goNil: return nil
        }
    }

    /// The string's text (invalid UTF-8 repaired), for comparisons; nil if not a readable string.
    public var string: String? {
        switch self {
        case .string(let bytes?, _, _): return String(decoding: bytes, as: UTF8.self)
        case .enumerator(let name?, _): return name
        case .decoded(let text, _): return text
        default: return nil
        }
    }

    /// In JSON: numbers as numbers, strings as (unescaped) strings, pointers and raw words as
    /// "0x…" strings, enums and decoded values by name.
    public var json: JSON {
        switch self {
        case .signed(let v): return .int(v)
        case .unsigned(let v): return .uint(v)
        case .boolean(let v): return .bool(v)
        case .character(let c): return .string(ArgumentValue.escape([c], quote: 0))
        case .floating(let v, let single): return v.isFinite ? .double(single ? Double(String(Float(v))) ?? v : v) : .string(String(v))
        case .string(let bytes, let address, _):
            guard let bytes else { return address == 0 ? .null : .string(hex(address)) }
            return .string(String(decoding: bytes, as: UTF8.self))
        case .pointer(let v), .raw(let v): return .string(hex(v))
        case .enumerator(let name, let v): return name.map { .string($0) } ?? .int(v)
        case .decoded(let text, _): return .string(text)
        case .inMemory(let address): return .string(hex(address))
        case .words(let words): return .array(words.map { .string(hex($0)) })
        case .slice(let address, let length, let capacity):
            return .object([("data", .string(hex(address))), ("len", .uint(length)), ("cap", .uint(capacity))])
        case .fields(let fields, _): return .object(fields.map { ($0.name, $0.value.json) })
        case .elements(let elements, _): return .array(elements.map(\.json))
        case .complex(let re, let im, let single):
            return .object([("real", ArgumentValue.floating(re, single: single).json), ("imag", ArgumentValue.floating(im, single: single).json)])
        case .unavailable, .goNil, .void: return .null
        }
    }

    /// Printable ASCII as it is; `\n`, `\t`, `\r`, `\\`, the quote, and `\xNN` for other bytes.
    static func escape(_ bytes: [UInt8], quote: UInt8) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        let digits = Array("0123456789abcdef".utf8)
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\n"): out += [0x5c, UInt8(ascii: "n")]
            case UInt8(ascii: "\t"): out += [0x5c, UInt8(ascii: "t")]
            case UInt8(ascii: "\r"): out += [0x5c, UInt8(ascii: "r")]
            case 0x5c: out += [0x5c, 0x5c]
            case _ where byte == quote && quote != 0: out += [0x5c, byte]
            case 0x20..<0x7f: out.append(byte)
            default: out += [0x5c, UInt8(ascii: "x"), digits[Int(byte >> 4)], digits[Int(byte & 0xf)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// One field of a Go struct's value.
public struct ArgumentField: Sendable, Equatable {
    public let name: String
    public let value: ArgumentValue
    public init(name: String, value: ArgumentValue) {
        self.name = name
        self.value = value
    }
}

/// One argument of a hit, typed: what `graft hook` prints as `name=value` and `--json` as
/// `{"name":…,"type":…,"value":…,"register":…,"raw":…}`.
public struct TypedArgument: Sendable, Equatable {
    /// As declared; `argN` (from 0, as `--filter` counts) when the declaration names none.
    public let name: String
    /// As C (or Go) spells it: `const char *`.
    public let type: String
    public let value: ArgumentValue
    /// Where it was: `rdi`, `xmm0`, `rsp+8` (above the return address), `rax+rbx` (Go string).
    public let register: String
    /// The (first) register's or stack word's bits.
    public let raw: UInt64

    public init(name: String, type: String, value: ArgumentValue, register: String, raw: UInt64) {
        self.name = name
        self.type = type
        self.value = value
        self.register = register
        self.raw = raw
    }

    public var json: JSON {
        .object([("name", .string(name)), ("type", .string(type)), ("value", value.json),
                 ("register", .string(register)), ("raw", .string(hex(raw)))])
    }
}

extension HookHit {
    /// The arguments by name, for filters (`--filter 'qty > 2'`): the typed ones, else the raw
    /// registers as `arg0`, `arg1`, … (`.raw`).
    public var namedArguments: [String: ArgumentValue] {
        var named: [String: ArgumentValue] = [:]
        if let typedArguments {
            for argument in typedArguments { named[argument.name] = argument.value }
        } else {
            for (i, value) in arguments.enumerated() { named["arg\(i)"] = .raw(value) }
        }
        return named
    }
}

extension Array where Element == TypedArgument {
    /// Go results as `graft hook` prints them after "returned": `7`, `(3, 2)`, `(q=3, r=2)`;
    /// a name only where the function gave one (not `~r0`).
    public var resultText: String {
        if count == 1 { return self[0].value.text }
        return "(" + map { $0.isNamedResult ? $0.name + "=" + $0.value.text : $0.value.text }.joined(separator: ", ") + ")"
    }
}

extension TypedArgument {
    /// A Go result the function named (`q`), not the compiler (`~r0`, `~b1`) nor `_`.
    public var isNamedResult: Bool { !name.isEmpty && !name.hasPrefix("~") && name != "_" }

    /// A result's JSON object: `{"type","value","register"}`, and `"name"` when the function named it.
    public var resultJSON: JSON {
        var fields: [(String, JSON)] = []
        if isNamedResult { fields.append(("name", .string(name))) }
        fields += [("type", .string(type)), ("value", value.json), ("register", .string(register))]
        return .object(fields)
    }
}

extension HookReturn {
    /// The result as `graft hook` prints it after "returned": the typed value (`7`, `"green"`), Go's
    /// several results as `(3, 2)` or `(q=3, r=2)`; nil when graft knows no types (then rax in hex).
    public var resultText: String? {
        if let typedValues, typedValues.count > 1 { return typedValues.resultText }
        return typedValue?.value.text
    }

    /// The typed result's keys of a `--json` return event: `,"result":{"type","value","register"}`
    /// for the (first) result, and `,"results":[…]` (each with `"name"` when the function named it)
    /// when a Go function has several; empty when graft knows no types.
    public var resultJSONFields: String {
        guard let typedValue else { return "" }
        var text = ",\"result\":" + JSON.object([("type", .string(typedValue.type)), ("value", typedValue.value.json),
                                                 ("register", .string(typedValue.register))]).serialized
        if let typedValues, typedValues.count > 1 {
            text += ",\"results\":" + JSON.array(typedValues.map(\.resultJSON)).serialized
        }
        return text
    }
}
