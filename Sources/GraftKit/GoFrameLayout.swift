import GraftCore
import GraftELF
import GraftPtrace

/// Where Go's register ABI (ABIInternal, Go ≥ 1.17; go/src/cmd/compile/abi-internal.md) puts each
/// argument and result of a function on x86_64, computed once per signature, and the values read
/// back from a stopped thread.
///
/// The assignment, as the compiler's `abiutils.go` does it: each value is split into scalar parts
/// (an integer, bool or pointer: one integer register; a float: one X register; a string or an
/// interface: two words; a slice: three; a complex: two floats; a struct: its fields in order;
/// an array of length 0: nothing, of length 1: its element; a longer array: not register-
/// assignable). A value whose parts all fit the registers left (integers rax, rbx, rcx, rdi, rsi,
/// r8–r11; floats X0–X14) takes them; otherwise the whole value goes to the stack, aligned to its
/// type, and the registers stay free for later values. Results start again from rax and X0; their
/// stack slots follow the arguments' (rounded to 8 bytes) in the caller's frame, so at the return
/// (rsp = entry rsp + 8) a stack result is at `rsp + offset`.
struct GoFrameLayout: Sendable {
    /// One scalar part of a value: an integer word or a float, its size, and its offset in the value's
    /// memory (for a value on the stack).
    struct Part: Sendable, Equatable {
        var isFloat: Bool
        var size: Int
        var offset: Int
    }

    enum Placement: Sendable, Equatable {
        /// In registers: for each part, in order, its register (an index into rax… or X0…).
        case registers([Int])
        /// On the stack, this many bytes into the frame's argument/result area.
        case stack(Int)
        /// graft cannot lay this value out (nor, for arguments, what follows it): why.
        case unknown(String)
    }

    struct Placed: Sendable, Equatable {
        var placement: Placement
        /// The value's parts: in register order for `.registers`, with memory offsets for `.stack`.
        var parts: [Part]
        var size: Int
        /// Where its last part ends (a stack value's bytes that are read).
        var partsEnd: Int { parts.reduce(0) { max($0, $1.offset + $1.size) } }
    }

    static let integerRegisters = ["rax", "rbx", "rcx", "rdi", "rsi", "r8", "r9", "r10", "r11"]
    static let floatRegisterCount = 15

    let arguments: [Placed]
    let results: [Placed]
    /// Some argument (or result) part is in an X register: PTRACE_GETFPREGS at that stop.
    let argumentsUseVectors: Bool
    let resultsUseVectors: Bool

    init(signature: FunctionSignature) {
        var stack = 0
        var stackKnown = true
        func assign(_ types: [DebugType]) -> [Placed] {
            var ints = 0, floats = 0
            var placed: [Placed] = []
            var poisoned: String?
            for type in types {
                if let poisoned {
                    placed.append(Placed(placement: .unknown(poisoned), parts: [], size: 0))
                    continue
                }
                var parts: [Part] = []
                let outcome = GoFrameLayout.collect(type, at: 0, memory: false, depth: 0, into: &parts)
                if case .unknown(let reason) = outcome {
                    // Did it take registers, or stack bytes? Unknown: so is everything after it.
                    poisoned = "after \(type.name), which graft cannot lay out (\(reason))"
                    stackKnown = false
                    placed.append(Placed(placement: .unknown(reason), parts: [], size: 0))
                    continue
                }
                let needInts = parts.filter { !$0.isFloat }.count, needFloats = parts.count - needInts
                if outcome == .fits, ints + needInts <= GoFrameLayout.integerRegisters.count,
                   floats + needFloats <= GoFrameLayout.floatRegisterCount {
                    var indices: [Int] = []
                    for part in parts {
                        if part.isFloat { indices.append(floats); floats += 1 } else { indices.append(ints); ints += 1 }
                    }
                    placed.append(Placed(placement: .registers(indices), parts: parts, size: GoFrameLayout.size(of: type) ?? 0))
                    continue
                }
                // The stack: the whole value, aligned to its type.
                var memoryParts: [Part] = []
                guard stackKnown, let size = GoFrameLayout.size(of: type), let alignment = GoFrameLayout.alignment(of: type),
                      !GoFrameLayout.collect(type, at: 0, memory: true, depth: 0, into: &memoryParts).isUnknown else {
                    let reason = stackKnown ? "graft cannot lay out \(type.name) in memory" : "its stack slot follows a value graft cannot lay out"
                    stackKnown = false  // the stack slots after it are unknown too
                    placed.append(Placed(placement: .unknown(reason), parts: [], size: 0))
                    continue
                }
                stack = (stack + alignment - 1) / alignment * alignment
                placed.append(Placed(placement: .stack(stack), parts: memoryParts, size: size))
                stack += size
            }
            return placed
        }
        arguments = assign(signature.parameters.map(\.type))
        stack = (stack + 7) / 8 * 8
        results = assign(signature.results.map(\.type))
        func usesVectors(_ placed: [Placed]) -> Bool {
            placed.contains { if case .registers = $0.placement { return $0.parts.contains(where: \.isFloat) } else { return false } }
        }
        argumentsUseVectors = usesVectors(arguments)
        resultsUseVectors = usesVectors(results)
    }

    // MARK: - Types

    enum Outcome: Equatable {
        /// Register-assignable (if there are registers enough).
        case fits
        /// Never in registers (an array of more than one element): on the stack.
        case stackOnly
        case unknown(String)

        var isUnknown: Bool { if case .unknown = self { return true } else { return false } }
    }

    /// The most bytes of a struct the ABI could put in registers: 24 registers of at most 8 bytes
    /// each, with at most 7 bytes of padding per part. A larger struct goes on the stack.
    static let registerBytesLimit = 192

    /// Appends `type`'s parts at `offset`. `memory`: for a value on the stack, arrays are expanded
    /// (their first `ArgumentValue.fieldLimit` elements).
    static func collect(_ type: DebugType, at offset: Int, memory: Bool, depth: Int, into parts: inout [Part]) -> Outcome {
        guard depth < 16 else { return .unknown("nested too deep") }
        func integer(_ size: Int) -> Outcome {
            guard size <= 8 else { return .unknown("\(size)-byte integer") }
            if size > 0 { parts.append(Part(isFloat: false, size: size, offset: offset)) }
            return .fits
        }
        switch type.kind {
        case .signed(let size), .unsigned(let size), .enumeration(let size, _, _), .decoded(_, let size): return integer(size)
        case .boolean, .character: return integer(1)
        case .pointer, .string: return integer(8)
        case .floating(let size):
            guard size <= 8 else { return .unknown("\(size)-byte float") }
            parts.append(Part(isFloat: true, size: size, offset: offset))
            return .fits
        case .complex(let size):
            guard size == 8 || size == 16 else { return .unknown("\(size)-byte complex") }
            parts.append(Part(isFloat: true, size: size / 2, offset: offset))
            parts.append(Part(isFloat: true, size: size / 2, offset: offset + size / 2))
            return .fits
        case .goString, .goInterface:
            parts.append(Part(isFloat: false, size: 8, offset: offset))
            parts.append(Part(isFloat: false, size: 8, offset: offset + 8))
            return .fits
        case .goSlice:
            for i in 0..<3 { parts.append(Part(isFloat: false, size: 8, offset: offset + 8 * i)) }
            return .fits
        case .goStruct(let size, let fields):
            guard size >= 0, size <= sizeLimit else { return .unknown("a \(size)-byte struct") }
            guard let fields else {
                return size > registerBytesLimit ? .stackOnly : .unknown("fields of \(type.name) not read")
            }
            var outcome = Outcome.fits
            for field in fields {
                guard field.offset >= 0, field.offset <= size else { return .unknown("a field at \(field.offset) in a \(size)-byte struct") }
                switch collect(field.type, at: offset + field.offset, memory: memory, depth: depth + 1, into: &parts) {
                case .fits: break
                case .stackOnly: outcome = .stackOnly
                case .unknown(let reason): return .unknown(reason)
                }
            }
            return outcome
        case .goArray(let count, let element):
            guard count >= 0 else { return .unknown("an array of length \(count)") }
            if count == 0 { return .fits }
            if count == 1 { return collect(element, at: offset, memory: memory, depth: depth + 1, into: &parts) }
            guard memory else {
                // Not register-assignable; but its element type must still be one graft can size.
                return size(of: type) == nil ? .unknown("array of \(element.name)") : .stackOnly
            }
            guard let elementSize = size(of: element) else { return .unknown("array of \(element.name)") }
            for i in 0..<min(count, ArgumentValue.fieldLimit) {
                if case .unknown(let reason) = collect(element, at: offset + i * elementSize, memory: true, depth: depth + 1, into: &parts) {
                    return .unknown(reason)
                }
            }
            return .stackOnly
        case .other(let size) where size <= 8: return integer(size)
        case .other(let size): return .unknown("\(size)-byte \(type.name)")
        case .structure, .byReference: return .unknown("a C struct")
        }
    }

    /// The largest value graft lays out (larger ones, from odd DWARF, are unknown): 4 GiB.
    static let sizeLimit = 1 << 32

    /// `type`'s size in bytes; nil when it is unknown, negative or past `sizeLimit`.
    static func size(of type: DebugType, depth: Int = 0) -> Int? {
        guard depth < 16, let size = unboundedSize(of: type, depth: depth), size >= 0, size <= sizeLimit else { return nil }
        return size
    }

    private static func unboundedSize(of type: DebugType, depth: Int) -> Int? {
        switch type.kind {
        case .signed(let size), .unsigned(let size), .floating(let size), .complex(let size), .enumeration(let size, _, _),
             .decoded(_, let size), .other(let size), .goStruct(let size, _), .structure(let size, _), .byReference(let size):
            return size
        case .boolean, .character: return 1
        case .pointer, .string: return 8
        case .goString, .goInterface: return 16
        case .goSlice: return 24
        case .goArray(let count, let element):
            guard count >= 0, let element = size(of: element, depth: depth + 1) else { return nil }
            let (total, overflow) = element.multipliedReportingOverflow(by: count)
            return overflow ? nil : total
        }
    }

    /// Go's alignment on amd64: a scalar's size (at most 8), a complex's half, a struct's largest field's.
    static func alignment(of type: DebugType, depth: Int = 0) -> Int? {
        guard depth < 16 else { return nil }
        switch type.kind {
        case .signed(let size), .unsigned(let size), .floating(let size), .enumeration(let size, _, _), .decoded(_, let size),
             .other(let size):
            return max(1, min(size, 8))
        case .complex(let size): return max(1, size / 2)
        case .boolean, .character: return 1
        case .pointer, .string, .goString, .goInterface, .goSlice: return 8
        case .goStruct(_, let fields?):
            var largest = 1
            for field in fields {
                guard let alignment = alignment(of: field.type, depth: depth + 1) else { return nil }
                largest = max(largest, alignment)
            }
            return largest
        case .goStruct(let size, nil): return size > registerBytesLimit ? 8 : nil  // a guess only where it cannot be in registers
        case .goArray(_, let element): return alignment(of: element, depth: depth + 1)
        case .structure, .byReference: return nil
        }
    }
}

// MARK: - Values

extension GoFrameLayout {
    /// The first `limit` arguments at the entry (rsp = entry rsp: stack arguments above the return
    /// address); stops at the first graft cannot place, as it cannot tell where the later ones are.
    func arguments(_ signature: FunctionSignature, limit: Int, registers: Registers, vectors: [UInt64]?,
                   read: ArgumentDecoder.Reader) -> [TypedArgument] {
        let count = min(limit, signature.parameters.count)
        let values = decode(Array(signature.parameters.prefix(count)), Array(arguments.prefix(count)), registers: registers,
                            vectors: vectors, stackBase: registers.rsp &+ 8, stackName: 8, read: read)
        var shown: [TypedArgument] = []
        for value in values {
            if case .unavailable = value.value { break }
            shown.append(value)
        }
        return shown
    }

    /// Every result at the return (rsp = entry rsp + 8: the results' stack area starts there, after
    /// the arguments'); a result graft cannot place is `?` (`.unavailable`).
    func results(_ signature: FunctionSignature, registers: Registers, vectors: [UInt64]?, read: ArgumentDecoder.Reader) -> [TypedArgument] {
        decode(signature.results, results, registers: registers, vectors: vectors, stackBase: registers.rsp, stackName: 0, read: read)
    }

    private func decode(_ parameters: [DebugParameter], _ placed: [Placed], registers: Registers, vectors: [UInt64]?,
                        stackBase: UInt64, stackName: Int, read: ArgumentDecoder.Reader) -> [TypedArgument] {
        let integers = registers.goIntegerArguments
        // One read for every stack value.
        // A value's parts end within it; a large array's first elements are all that is read.
        var stackEnd = 0
        for value in placed { if case .stack(let offset) = value.placement { stackEnd = max(stackEnd, offset + value.partsEnd) } }
        let stack = stackEnd > 0 ? read(stackBase, stackEnd) : nil
        var out: [TypedArgument] = []
        for (i, (parameter, value)) in zip(parameters, placed).enumerated() {
            let name = parameter.name.isEmpty ? "arg\(i)" : parameter.name
            switch value.placement {
            case .unknown(let reason):
                out.append(TypedArgument(name: name, type: parameter.type.name, value: .unavailable(reason), register: "?", raw: 0))
            case .registers(let indices):
                var words: [UInt64] = []
                var names: [String] = []
                for (part, index) in zip(value.parts, indices) {
                    if part.isFloat {
                        words.append(vectors.flatMap { index < $0.count ? $0[index] : nil } ?? 0)
                        names.append("xmm\(index)")
                    } else {
                        words.append(integers[index])
                        names.append(GoFrameLayout.integerRegisters[index])
                    }
                }
                var next = words[...]
                let shown = GoFrameLayout.value(parameter.type, &next, address: nil, read: read)
                out.append(TypedArgument(name: name, type: parameter.type.name, value: shown,
                                         register: names.isEmpty ? "none" : names.joined(separator: "+"), raw: words.first ?? 0))
            case .stack(let offset):
                let address = stackBase &+ UInt64(offset)
                guard let stack, stack.count >= offset + value.partsEnd else {
                    out.append(TypedArgument(name: name, type: parameter.type.name, value: .unavailable("stack unreadable at \(hex(address))"),
                                             register: "rsp+\(stackName + offset)", raw: 0))
                    continue
                }
                let words = value.parts.map { part in GoFrameLayout.load(stack, at: offset + part.offset, size: part.size) }
                var next = words[...]
                let shown = GoFrameLayout.value(parameter.type, &next, address: address, read: read)
                out.append(TypedArgument(name: name, type: parameter.type.name, value: shown, register: "rsp+\(stackName + offset)",
                                         raw: words.first ?? address))
            }
        }
        return out
    }

    /// `size` bytes little-endian at `offset`, zero-extended.
    static func load(_ bytes: [UInt8], at offset: Int, size: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<min(size, 8) where offset + i < bytes.count {
            value |= UInt64(bytes[offset + i]) << UInt64(8 * i)
        }
        return value
    }

    /// A value of `type` from its parts' words, in `collect`'s order; `address`: where it is in
    /// memory (a stack value), for a struct graft did not read.
    static func value(_ type: DebugType, _ words: inout ArraySlice<UInt64>, address: UInt64?, read: ArgumentDecoder.Reader,
                      depth: Int = 0) -> ArgumentValue {
        func next() -> UInt64 { words.popFirst() ?? 0 }
        switch type.kind {
        case .goString:
            let data = next(), length = next()
            // Go's empty string may have a nil data pointer: still "", not NULL.
            return length == 0 ? .string([], address: data, truncated: false) : ArgumentDecoder.buffer(at: data, length: length, read: read)
        case .goInterface:
            let type = next(), data = next()
            return type == 0 && data == 0 ? .goNil : .words([type, data])
        case .goSlice:
            let data = next(), length = next(), capacity = next()
            return .slice(data, length: length, capacity: capacity)
        case .complex(let size):
            let re = next(), im = next()
            if size == 8 {
                return .complex(Double(Float(bitPattern: UInt32(truncatingIfNeeded: re))),
                                Double(Float(bitPattern: UInt32(truncatingIfNeeded: im))), single: true)
            }
            return .complex(Double(bitPattern: re), Double(bitPattern: im), single: false)
        case .goStruct(_, let fields?):
            var shown: [ArgumentField] = []
            for field in fields {
                let value = value(field.type, &words, address: address.map { $0 &+ UInt64(field.offset) }, read: read, depth: depth + 1)
                // Every field's parts are consumed; only the first few are shown.
                if shown.count < ArgumentValue.fieldLimit { shown.append(ArgumentField(name: field.name, value: value)) }
            }
            return .fields(shown, more: fields.count - shown.count)
        case .goStruct(_, nil):
            return .inMemory(address ?? 0)
        case .goArray(let count, let element):
            guard count > 0 else { return .elements([], more: 0) }
            let elementSize = UInt64(size(of: element) ?? 0)
            let shown = min(count, ArgumentValue.fieldLimit)
            var elements: [ArgumentValue] = []
            for i in 0..<shown {
                elements.append(value(element, &words, address: address.map { $0 &+ UInt64(i) &* elementSize }, read: read, depth: depth + 1))
            }
            return .elements(elements, more: count - shown)
        case .other(0):
            return .fields([], more: 0)
        default:
            return ArgumentDecoder.value(of: type, words: [next()], read: read)
        }
    }
}
