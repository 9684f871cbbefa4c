/// What graft knows of a function's parameters and result: from DWARF (`DWARFReader`), or from
/// GraftKit's built-in libc prototypes. Plain values: decoding them against registers and memory is
/// GraftKit's (`ArgumentDecoder`).
public struct DebugType: Sendable, Equatable, CustomStringConvertible {
    /// As C (or Go) spells it: `const char *`, `size_t`, `enum color`, `*main.Worker`.
    public var name: String
    public var kind: Kind

    public enum Kind: Sendable, Equatable {
        /// Signed integer of this many bytes.
        case signed(Int)
        case unsigned(Int)
        case boolean
        /// `char` itself (1 byte): shown as a quoted character.
        case character
        /// `float` (4), `double` (8); `long double` (16) is passed on the stack.
        case floating(Int)
        /// `char *` / `const char *`: a NUL-terminated string read from the target, bounded.
        case string
        /// Any other pointer: hex.
        case pointer
        /// An enum: its value by name (`RED`), or the number when no enumerator matches.
        case enumeration(size: Int, signed: Bool, cases: [Enumerator])
        /// A struct or union passed by value: `eightbytes` are the SysV classes of its 8-byte
        /// parts (true: SSE, false: INTEGER); nil when it is passed in memory (over 16 bytes, or
        /// holding a `long double`).
        case structure(size: Int, eightbytes: [Bool]?)
        /// A C++ class the ABI passes by invisible reference (a non-trivial copy constructor or
        /// destructor: DW_AT_calling_convention DW_CC_pass_by_reference): its address is passed.
        case byReference(size: Int)
        /// An integer decoded by a named table (`open_flags`, `mmap_prot`, `fd`…): GraftKit knows them.
        case decoded(String, size: Int)
        /// Go: a string (pointer and length), a slice (pointer, length, capacity), an interface
        /// (type word and data word).
        case goString, goSlice, goInterface
        /// A Go struct: its fields in order, at their offsets (Go's register ABI assigns them one by
        /// one); nil when graft could not read them all (too deep, too many).
        case goStruct(size: Int, fields: [DebugField]?)
        /// A Go array `[count]element` (only lengths 0 and 1 are register-assignable).
        indirect case goArray(count: Int, element: DebugType)
        /// A complex number of this many bytes (Go's complex64 and complex128, C's `_Complex`):
        /// real part then imaginary part.
        case complex(Int)
        /// Anything else graft does not decode (shown as the raw register).
        case other(size: Int)
    }

    public struct Enumerator: Sendable, Equatable {
        public let name: String
        public let value: Int64
        public init(name: String, value: Int64) {
            self.name = name
            self.value = value
        }
    }

    public init(_ name: String, _ kind: Kind) {
        self.name = name
        self.kind = kind
    }

    public var description: String { name }

    /// Passed in an xmm register (SysV and Go).
    public var isFloating: Bool {
        if case .floating(let size) = kind { return size <= 8 }
        return false
    }
}

/// One field of a Go struct.
public struct DebugField: Sendable, Equatable {
    public let name: String
    /// Bytes from the struct's start.
    public let offset: Int
    public let type: DebugType
    public init(name: String, offset: Int, type: DebugType) {
        self.name = name
        self.offset = offset
        self.type = type
    }
}

/// One parameter as declared.
public struct DebugParameter: Sendable, Equatable {
    /// Empty when the declaration names none (a prototype `int f(int)`): named `argN` (from 0, as `--filter` counts).
    public let name: String
    public let type: DebugType
    public init(name: String, type: DebugType) {
        self.name = name
        self.type = type
    }
}

/// A function's parameters and result.
public struct FunctionSignature: Sendable, Equatable {
    public let name: String
    public let parameters: [DebugParameter]
    /// nil: `void`. For Go, the first of `results`.
    public let result: DebugType?
    /// Go: every result in order (`~r0`, `~r1`, or the names a function gives them): DWARF's
    /// formal parameters with DW_AT_variable_parameter. Empty for C.
    public let results: [DebugParameter]
    /// `...` after the named parameters.
    public let variadic: Bool
    /// Where it came from: `DWARF (path)` or `libc prototype`.
    public let source: String

    public init(name: String, parameters: [DebugParameter], result: DebugType?, results: [DebugParameter] = [],
                variadic: Bool = false, source: String) {
        self.name = name
        self.parameters = parameters
        self.result = result
        self.results = results
        self.variadic = variadic
        self.source = source
    }
}
