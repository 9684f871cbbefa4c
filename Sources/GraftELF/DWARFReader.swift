import CLibdw
import GraftCore
import Glibc

/// The DWARF of one ELF file, read with elfutils' libdw (`dwarf_begin`): the signature of the
/// function at a link-time address. A maintained library rather than a parser of graft's own:
/// DWARF 2–5, split and compressed sections, every producer's quirks.
public final class DWARFReader: @unchecked Sendable {
    /// The file the DWARF is in (the program itself, or its separate debug file).
    public let path: String
    private let fd: Int32
    private let dwarf: OpaquePointer
    /// Go's DW_AT_go_kind (0x2900): what a Go type is, where the DWARF tag does not say.
    private static let goKindAttribute: UInt32 = 0x2900
    private let lock = Locked(())
    /// Go struct fields still to describe for the signature being read (under `lock`): a bound on
    /// the work a struct of structs of structs can ask for.
    private var goFieldBudget = 0

    /// nil when the file cannot be opened or holds no DWARF (`dwarf_begin` fails: no .debug_info).
    public init?(path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        guard let dwarf = dwarf_begin(fd, DWARF_C_READ) else {
            close(fd)
            return nil
        }
        self.path = path
        self.fd = fd
        self.dwarf = dwarf
    }

    deinit {
        dwarf_end(dwarf)
        close(fd)
    }

    /// The subprogram whose entry (low pc) is `address` (link-time), with its parameters; nil when
    /// no DWARF describes a function there.
    public func signature(at address: UInt64) -> FunctionSignature? {
        lock.withLock { _ in
            var cu = Dwarf_Die()
            if dwarf_addrdie(dwarf, address, &cu) != nil, let found = subprogram(in: &cu, at: address) {
                return found
            }
            // No .debug_aranges (Go, some linkers): every unit that covers the address.
            var offset: Dwarf_Off = 0, next: Dwarf_Off = 0
            var headerSize = 0
            while dwarf_nextcu(dwarf, offset, &next, &headerSize, nil, nil, nil) == 0 {
                defer { offset = next }
                var unit = Dwarf_Die()
                guard dwarf_offdie(dwarf, offset + Dwarf_Off(headerSize), &unit) != nil else { continue }
                if dwarf_haspc(&unit, address) == 1, let found = subprogram(in: &unit, at: address) { return found }
            }
            return nil
        }
    }

    // MARK: - Finding the subprogram

    /// Depth-first through namespaces, classes and structs (C++ methods), for a DW_TAG_subprogram
    /// whose low pc (or entry pc) is `address`.
    private func subprogram(in parent: inout Dwarf_Die, at address: UInt64, depth: Int = 0) -> FunctionSignature? {
        guard depth < 8 else { return nil }
        var child = Dwarf_Die()
        guard dwarf_child(&parent, &child) == 0 else { return nil }
        while true {
            let tag = Int(dwarf_tag(&child))
            if tag == DW_TAG_subprogram {
                var low: Dwarf_Addr = 0
                if (dwarf_lowpc(&child, &low) == 0 && low == address) || (dwarf_entrypc(&child, &low) == 0 && low == address) {
                    return signature(of: &child)
                }
            } else if tag == DW_TAG_namespace || tag == DW_TAG_class_type || tag == DW_TAG_structure_type || tag == DW_TAG_module {
                if let found = subprogram(in: &child, at: address, depth: depth + 1) { return found }
            }
            var sibling = Dwarf_Die()
            guard dwarf_siblingof(&child, &sibling) == 0 else { return nil }
            child = sibling
        }
    }

    private func signature(of function: inout Dwarf_Die) -> FunctionSignature {
        goFieldBudget = 2048
        let name = dwarf_diename(&function).map { String(cString: $0) } ?? "?"
        var parameters: [DebugParameter] = []
        var variadic = false
        var result = referencedType(of: &function).map { describe($0) }
        var goResults: [DebugParameter] = []
        // A concrete out-of-line copy of an inlined function has its parameters as children that
        // point (DW_AT_abstract_origin) at the abstract ones: dwarf_diename and
        // dwarf_attr_integrate follow that.
        var child = Dwarf_Die()
        if dwarf_child(&function, &child) == 0 {
            repeat {
                let tag = Int(dwarf_tag(&child))
                if tag == DW_TAG_formal_parameter {
                    let parameterName = dwarf_diename(&child).map { String(cString: $0) } ?? ""
                    let type = referencedType(of: &child).map { describe($0) } ?? DebugType("?", .other(size: 8))
                    // Go: results are parameters with DW_AT_variable_parameter set. Go 1.19 may
                    // write one twice (main.mix's `~r0` in go_typed: the same name, type and line):
                    // a name is declared once, so a repeated one (but `_`) is that duplicate.
                    let repeated = !parameterName.isEmpty && parameterName != "_"
                        && (goResults.contains { $0.name == parameterName } || parameters.contains { $0.name == parameterName })
                    if repeated {
                        // dropped
                    } else if flag(DW_AT_variable_parameter, of: &child) {
                        goResults.append(DebugParameter(name: parameterName, type: type))
                    } else {
                        parameters.append(DebugParameter(name: parameterName, type: type))
                    }
                } else if tag == DW_TAG_unspecified_parameters {
                    variadic = true
                }
                var sibling = Dwarf_Die()
                guard dwarf_siblingof(&child, &sibling) == 0 else { break }
                child = sibling
            } while true
        }
        if result == nil { result = goResults.first?.type }
        return FunctionSignature(name: name, parameters: parameters, result: result, results: goResults, variadic: variadic,
                                 source: "DWARF (\(path))")
    }

    // MARK: - Types

    private func referencedType(of die: inout Dwarf_Die) -> Dwarf_Die? {
        var attribute = Dwarf_Attribute()
        guard dwarf_attr_integrate(&die, UInt32(DW_AT_type), &attribute) != nil else { return nil }
        var type = Dwarf_Die()
        guard dwarf_formref_die(&attribute, &type) != nil else { return nil }
        return type
    }

    private func flag(_ name: Int, of die: inout Dwarf_Die) -> Bool {
        var attribute = Dwarf_Attribute()
        guard dwarf_attr_integrate(&die, UInt32(name), &attribute) != nil else { return false }
        var value = false
        return dwarf_formflag(&attribute, &value) == 0 && value
    }

    private func unsigned(_ name: UInt32, of die: inout Dwarf_Die) -> UInt64? {
        var attribute = Dwarf_Attribute()
        guard dwarf_attr_integrate(&die, name, &attribute) != nil else { return nil }
        var value: Dwarf_Word = 0
        return dwarf_formudata(&attribute, &value) == 0 ? value : nil
    }

    private func ownName(_ die: inout Dwarf_Die) -> String? {
        dwarf_diename(&die).map { String(cString: $0) }
    }

    private func byteSize(_ die: inout Dwarf_Die) -> Int? {
        let size = dwarf_bytesize(&die)
        return size >= 0 ? Int(size) : nil
    }

    /// The C spelling of a type (`const char *`, `struct point`, `unsigned int`) and how to show it.
    func describe(_ type: Dwarf_Die, depth: Int = 0) -> DebugType {
        var die = type
        let tag = Int(dwarf_tag(&die))
        let named = ownName(&die)
        guard depth < 12 else { return DebugType(named ?? "?", .other(size: 8)) }
        // Go names its kinds (a typedef `io.Writer` of kind Interface over `runtime.iface`).
        switch goKind(&die) {
        case 24?: return DebugType(named ?? "string", .goString)
        case 23?: return DebugType(named ?? "[]?", .goSlice)
        case 20?: return DebugType(named ?? "interface {}", .goInterface)
        // Pointers, maps, channels, funcs, unsafe.Pointer: one word. The pointee is not described
        // (Go names its pointer types, `*main.Counter`, and a struct's pointers would recurse).
        case 18?, 19?, 21?, 22?, 26?: return DebugType(named ?? "pointer", .pointer)
        case 25? where tag == DW_TAG_structure_type: return goStruct(&die, named: named ?? "struct", depth: depth)
        case 17? where tag == DW_TAG_array_type:
            guard let element = referencedType(of: &die), let count = arrayCount(&die) else {
                return DebugType(named ?? "array", .other(size: byteSize(&die) ?? 8))
            }
            return DebugType(named ?? "array", .goArray(count: count, element: describe(element, depth: depth + 1)))
        default: break
        }
        switch tag {
        case DW_TAG_base_type:
            let size = byteSize(&die) ?? 8
            let encoding = Int(unsigned(UInt32(DW_AT_encoding), of: &die) ?? 0)
            let name = named ?? "?"
            switch encoding {
            case DW_ATE_float: return DebugType(name, .floating(size))
            case DW_ATE_complex_float: return DebugType(name, size == 8 || size == 16 ? .complex(size) : .other(size: size))
            case DW_ATE_boolean: return DebugType(name, .boolean)
            case DW_ATE_signed_char, DW_ATE_unsigned_char:
                return DebugType(name, name == "char" ? .character : (encoding == DW_ATE_signed_char ? .signed(size) : .unsigned(size)))
            case DW_ATE_signed: return DebugType(name, .signed(size))
            case DW_ATE_unsigned, DW_ATE_UTF: return DebugType(name, .unsigned(size))
            default: return DebugType(name, .other(size: size))
            }
        case DW_TAG_typedef:
            // The name the declaration used (`size_t`, `uint8_t`), the behaviour of what it names.
            guard let target = referencedType(of: &die) else { return DebugType(named ?? "?", .other(size: 8)) }
            var inner = describe(target, depth: depth + 1)
            if goKind(&die) == nil || named != nil { inner.name = named ?? inner.name }
            return inner
        case DW_TAG_const_type, DW_TAG_volatile_type, DW_TAG_restrict_type, DW_TAG_atomic_type:
            let qualifier = tag == DW_TAG_const_type ? "const" : tag == DW_TAG_volatile_type ? "volatile" : tag == DW_TAG_restrict_type ? "restrict" : "_Atomic"
            guard let target = referencedType(of: &die) else { return DebugType("\(qualifier) void", .other(size: 0)) }
            var inner = describe(target, depth: depth + 1)
            inner.name = tag == DW_TAG_restrict_type ? inner.name : "\(qualifier) \(inner.name)"
            return inner
        case DW_TAG_pointer_type, DW_TAG_reference_type, DW_TAG_rvalue_reference_type:
            let mark = tag == DW_TAG_pointer_type ? "*" : tag == DW_TAG_reference_type ? "&" : "&&"
            guard let target = referencedType(of: &die) else { return DebugType(named ?? "void \(mark)", .pointer) }
            var targetDie = target
            if Int(dwarf_tag(&targetDie)) == DW_TAG_subroutine_type { return DebugType(named ?? "function pointer", .pointer) }
            let inner = describe(target, depth: depth + 1)
            let name = named ?? (inner.name.hasSuffix("*") ? "\(inner.name)\(mark)" : "\(inner.name) \(mark)")
            if tag == DW_TAG_pointer_type, inner.kind == .character { return DebugType(name, .string) }
            return DebugType(name, .pointer)
        case DW_TAG_enumeration_type:
            let size = byteSize(&die) ?? 4
            var isSigned = true
            if let underlying = referencedType(of: &die), case .unsigned = describe(underlying, depth: depth + 1).kind { isSigned = false }
            var cases: [DebugType.Enumerator] = []
            var child = Dwarf_Die()
            if dwarf_child(&die, &child) == 0 {
                repeat {
                    if Int(dwarf_tag(&child)) == DW_TAG_enumerator, let name = ownName(&child) {
                        var attribute = Dwarf_Attribute()
                        if dwarf_attr(&child, UInt32(DW_AT_const_value), &attribute) != nil {
                            var signedValue: Dwarf_Sword = 0
                            var unsignedValue: Dwarf_Word = 0
                            if isSigned, dwarf_formsdata(&attribute, &signedValue) == 0 {
                                cases.append(.init(name: name, value: Int64(signedValue)))
                            } else if dwarf_formudata(&attribute, &unsignedValue) == 0 {
                                cases.append(.init(name: name, value: Int64(bitPattern: unsignedValue)))
                            }
                        }
                    }
                    var sibling = Dwarf_Die()
                    guard dwarf_siblingof(&child, &sibling) == 0 else { break }
                    child = sibling
                } while true
            }
            return DebugType(named.map { "enum \($0)" } ?? "enum", .enumeration(size: size, signed: isSigned, cases: cases))
        case DW_TAG_structure_type, DW_TAG_union_type, DW_TAG_class_type:
            let size = byteSize(&die) ?? 0
            let word = tag == DW_TAG_union_type ? "union" : tag == DW_TAG_class_type ? "class" : "struct"
            let name = named.map { isGoType(&die) ? $0 : "\(word) \($0)" } ?? word
            if unsigned(UInt32(DW_AT_calling_convention), of: &die) == UInt64(DW_CC_pass_by_reference) {
                return DebugType(named ?? name, .byReference(size: size))
            }
            return DebugType(name, .structure(size: size, eightbytes: classify(&die, size: size)))
        case DW_TAG_array_type:
            return DebugType(named ?? "array", .other(size: byteSize(&die) ?? 8))
        default:
            return DebugType(named ?? "?", .other(size: byteSize(&die) ?? 8))
        }
    }

    /// The most fields of a Go struct graft reads; a larger struct is shown by address.
    static let goStructFieldLimit = 64

    /// A Go struct's fields (DW_TAG_member with their offsets), each described.
    private func goStruct(_ die: inout Dwarf_Die, named: String, depth: Int) -> DebugType {
        let size = byteSize(&die) ?? 0
        var fields: [DebugField] = []
        var child = Dwarf_Die()
        if dwarf_child(&die, &child) == 0 {
            repeat {
                if Int(dwarf_tag(&child)) == DW_TAG_member {
                    goFieldBudget -= 1
                    guard fields.count < DWARFReader.goStructFieldLimit, depth < 8, goFieldBudget > 0,
                          let offset = unsigned(UInt32(DW_AT_data_member_location), of: &child).flatMap({ Int(exactly: $0) }),
                          let type = referencedType(of: &child) else {
                        return DebugType(named, .goStruct(size: size, fields: nil))
                    }
                    fields.append(DebugField(name: ownName(&child) ?? "", offset: offset, type: describe(type, depth: depth + 1)))
                }
                var sibling = Dwarf_Die()
                guard dwarf_siblingof(&child, &sibling) == 0 else { break }
                child = sibling
            } while true
        }
        return DebugType(named, .goStruct(size: size, fields: fields))
    }

    /// An array's length: its subrange's DW_AT_count (Go), or upper bound + 1 (C).
    private func arrayCount(_ die: inout Dwarf_Die) -> Int? {
        var child = Dwarf_Die()
        guard dwarf_child(&die, &child) == 0 else { return nil }
        repeat {
            if Int(dwarf_tag(&child)) == DW_TAG_subrange_type {
                // Odd DWARF's lengths past Int (an upper bound of -1 read unsigned) are no length.
                if let count = unsigned(UInt32(DW_AT_count), of: &child) { return Int(exactly: count) }
                if let upper = unsigned(UInt32(DW_AT_upper_bound), of: &child) { return upper < UInt64(Int.max) ? Int(upper) + 1 : nil }
                return nil
            }
            var sibling = Dwarf_Die()
            guard dwarf_siblingof(&child, &sibling) == 0 else { return nil }
            child = sibling
        } while true
    }

    private func goKind(_ die: inout Dwarf_Die) -> UInt64? {
        unsigned(DWARFReader.goKindAttribute, of: &die)
    }

    private func isGoType(_ die: inout Dwarf_Die) -> Bool { goKind(&die) != nil }

    // MARK: - SysV classification of small structs

    /// The class of each eightbyte of a struct passed by value (true: SSE, false: INTEGER), or nil
    /// for MEMORY: over 16 bytes, a `long double`, a member at an offset graft cannot read.
    private func classify(_ die: inout Dwarf_Die, size: Int) -> [Bool]? {
        guard size > 0, size <= 16 else { return nil }
        // Per eightbyte: nil (no member yet), true (only floats so far), false (an integer seen).
        var classes: [Bool?] = Array(repeating: nil, count: (size + 7) / 8)
        guard mark(&die, at: 0, into: &classes, depth: 0) else { return nil }
        return classes.map { $0 ?? false }
    }

    private func mark(_ die: inout Dwarf_Die, at offset: Int, into classes: inout [Bool?], depth: Int) -> Bool {
        guard depth < 8 else { return false }
        var type = die
        // Typedefs and qualifiers name nothing new.
        while [DW_TAG_typedef, DW_TAG_const_type, DW_TAG_volatile_type].contains(Int(dwarf_tag(&type))) {
            guard let next = referencedType(of: &type) else { return false }
            type = next
        }
        let tag = Int(dwarf_tag(&type))
        switch tag {
        case DW_TAG_structure_type, DW_TAG_union_type, DW_TAG_class_type:
            var child = Dwarf_Die()
            guard dwarf_child(&type, &child) == 0 else { return true }
            repeat {
                if Int(dwarf_tag(&child)) == DW_TAG_member {
                    let memberOffset = Int(unsigned(UInt32(DW_AT_data_member_location), of: &child) ?? 0)
                    guard var memberType = referencedType(of: &child),
                          mark(&memberType, at: offset + memberOffset, into: &classes, depth: depth + 1) else { return false }
                }
                var sibling = Dwarf_Die()
                guard dwarf_siblingof(&child, &sibling) == 0 else { break }
                child = sibling
            } while true
            return true
        case DW_TAG_array_type:
            guard var element = referencedType(of: &type) else { return false }
            let total = byteSize(&type) ?? 0
            let elementSize = max(describeSize(&element), 1)
            var at = 0
            while at < total {
                guard mark(&element, at: offset + at, into: &classes, depth: depth + 1) else { return false }
                at += elementSize
            }
            return true
        default:
            let leaf = describe(type, depth: depth)
            let slot = offset / 8
            guard slot < classes.count else { return false }
            if case .floating(let size) = leaf.kind {
                if size > 8 { return false }  // long double: MEMORY
                classes[slot] = classes[slot] ?? true
            } else {
                classes[slot] = false
            }
            return true
        }
    }

    private func describeSize(_ die: inout Dwarf_Die) -> Int {
        if let size = byteSize(&die) { return size }
        var type = die
        while let next = referencedType(of: &type) {
            type = next
            if let size = byteSize(&type) { return size }
        }
        return 8
    }
}
