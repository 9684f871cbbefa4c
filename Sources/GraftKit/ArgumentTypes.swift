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
        case .raw(let v): return hex(v)
        case .void: return "void"
        }
    }

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
        case .string, .inMemory, .words, .slice, .void: return nil
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
        case .void: return .null
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

/// One argument of a hit, typed: what `graft hook` prints as `name=value` and `--json` as
/// `{"name":…,"type":…,"value":…,"register":…,"raw":…}`.
public struct TypedArgument: Sendable, Equatable {
    /// As declared; `argN` (from 1) when the declaration names none.
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
    /// registers as `arg1`, `arg2`, … (`.raw`).
    public var namedArguments: [String: ArgumentValue] {
        var named: [String: ArgumentValue] = [:]
        if let typedArguments {
            for argument in typedArguments { named[argument.name] = argument.value }
        } else {
            for (i, value) in arguments.enumerated() { named["arg\(i + 1)"] = .raw(value) }
        }
        return named
    }
}
