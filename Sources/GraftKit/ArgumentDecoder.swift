import GraftCore
import GraftELF
import GraftPtrace

/// A function's signature applied to a stopped thread: which register or stack slot holds each
/// parameter (SysV x86_64: integers in rdi, rsi, rdx, rcx, r8, r9, floats in xmm0–7, the rest and
/// large structs on the stack; Go's ABIInternal: integers in rax, rbx, rcx, rdi, rsi, r8–r11,
/// floats in X0–X14), and each value as its type says (`ArgumentValue`). Pure but for `read`,
/// which reads target memory (strings, stack words, sockaddrs).
public struct ArgumentDecoder: Sendable {
    /// The most bytes of a string shown (then `...`).
    public static let stringLimit = 64

    public let signature: FunctionSignature
    public let goABI: Bool
    /// Some parameter is in an xmm register: PTRACE_GETFPREGS per hit (only then).
    public let argumentsUseVectors: Bool
    /// The result is in xmm0 (a Go result: some result is in an X register).
    public let resultUsesVectors: Bool
    /// Go: where each argument and result is (`GoFrameLayout`), computed once.
    let goLayout: GoFrameLayout?
    /// The output parameters by index, and their kind (`output:ret`, `output:str`: `OutputArguments`).
    let outputKinds: [Int: String]

    public init(signature: FunctionSignature, goABI: Bool) {
        self.signature = signature
        self.goABI = goABI
        var kinds: [Int: String] = [:]
        for (i, parameter) in signature.parameters.enumerated() {
            if case .decoded(let decoder, _) = parameter.type.kind, decoder.hasPrefix("output:") { kinds[i] = decoder }
        }
        outputKinds = kinds
        if goABI {
            let layout = GoFrameLayout(signature: signature)
            goLayout = layout
            argumentsUseVectors = layout.argumentsUseVectors
            resultUsesVectors = layout.resultsUseVectors
            return
        }
        goLayout = nil
        argumentsUseVectors = signature.parameters.contains { parameter in
            if parameter.type.isFloating { return true }
            if case .structure(_, let eightbytes?) = parameter.type.kind { return eightbytes.contains(true) }
            return false
        }
        if case .structure(_, let eightbytes?)? = signature.result?.kind {
            resultUsesVectors = eightbytes.contains(true)
        } else {
            resultUsesVectors = signature.result?.isFloating == true
        }
    }

    public typealias Reader = (UInt64, Int) -> [UInt8]?

    static let sysvIntegers = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"]

    /// Where one parameter is (SysV): register names (or `rsp+N`) and their bits.
    struct Slot {
        var location: String
        var words: [UInt64]
    }

    /// The first `limit` parameters at a function's entry (Go: those graft can place, in order).
    public func arguments(limit: Int, registers: Registers, vectors: [UInt64]?, read: Reader) -> [TypedArgument] {
        if let goLayout {
            return goLayout.arguments(signature, limit: limit, registers: registers, vectors: vectors, read: read)
        }
        let parameters = signature.parameters.prefix(limit)
        let integers = registers.integerArguments
        let integerNames = ArgumentDecoder.sysvIntegers
        let vectorCount = 8
        var nextInteger = 0, nextVector = 0, stackOffset: UInt64 = 8
        // A result returned in memory: the caller passes where, as a hidden first argument (rdi).
        if let result = signature.result {
            switch result.kind {
            case .structure(_, nil), .byReference: nextInteger = 1
            default: break
            }
        }
        var stack: [UInt8]?
        func stackWords(_ count: Int) -> (String, [UInt64]) {
            let at = stackOffset
            stackOffset += UInt64(count * 8)
            if stack == nil || stack!.count < Int(stackOffset) {
                stack = read(registers.rsp, Int(max(stackOffset, 128))) ?? []
            }
            var words: [UInt64] = []
            for i in 0..<count {
                let offset = Int(at) + i * 8
                words.append(offset + 8 <= stack!.count ? readLittleEndianUInt64(stack!, at: offset) : 0)
            }
            return ("rsp+\(at)", words)
        }
        func integer(_ count: Int) -> Slot {
            if nextInteger + count <= integers.count {
                defer { nextInteger += count }
                return Slot(location: integerNames[nextInteger..<nextInteger + count].joined(separator: "+"),
                            words: Array(integers[nextInteger..<nextInteger + count]))
            }
            nextInteger = integers.count  // once on the stack, no more registers for it
            let (location, words) = stackWords(count)
            return Slot(location: location, words: words)
        }
        var slots: [Slot] = []
        for parameter in parameters {
            let type = parameter.type
            switch type.kind {
            case .floating(let size) where size <= 8:
                if nextVector < vectorCount, let vectors {
                    slots.append(Slot(location: "xmm\(nextVector)", words: [vectors[nextVector]]))
                    nextVector += 1
                } else if nextVector < vectorCount {
                    slots.append(Slot(location: "xmm\(nextVector)", words: [0]))
                    nextVector += 1
                } else {
                    let (location, words) = stackWords(1)
                    slots.append(Slot(location: location, words: words))
                }
            case .floating:  // long double: 16 bytes on the stack, 16-aligned
                stackOffset = (stackOffset + 15) & ~15
                let at = stackOffset
                stackOffset += 16
                slots.append(Slot(location: "rsp+\(at)", words: [registers.rsp &+ at]))
            case .structure(let size, let eightbytes):
                let needInts = eightbytes?.filter { !$0 }.count ?? 0
                let needVectors = eightbytes?.filter { $0 }.count ?? 0
                if let eightbytes, nextInteger + needInts <= integers.count, nextVector + needVectors <= vectorCount {
                    var names: [String] = [], words: [UInt64] = []
                    for isVector in eightbytes {
                        if isVector {
                            names.append("xmm\(nextVector)")
                            words.append(vectors?[nextVector] ?? 0)
                            nextVector += 1
                        } else {
                            names.append(integerNames[nextInteger])
                            words.append(integers[nextInteger])
                            nextInteger += 1
                        }
                    }
                    slots.append(Slot(location: names.joined(separator: "+"), words: words))
                } else {
                    // In memory: its bytes on the stack, 8-aligned; shown by address.
                    let at = stackOffset
                    stackOffset += UInt64((max(size, 8) + 7) / 8 * 8)
                    slots.append(Slot(location: "rsp+\(at)", words: [registers.rsp &+ at]))
                }
            default:
                slots.append(integer(1))
            }
        }
        return finish(slots, parameters: parameters, registers: registers, read: read)
    }

    private func finish(_ slots: [Slot], parameters: ArraySlice<DebugParameter>, registers: Registers, read: Reader) -> [TypedArgument] {
        var result: [TypedArgument] = []
        for (i, slot) in slots.enumerated() {
            let parameter = parameters[parameters.startIndex + i]
            let first = slot.words.first ?? 0
            // open(2)'s mode means something only with O_CREAT or O_TMPFILE: otherwise it is whatever
            // the register held, and not shown.
            if case .decoded("mode", _) = parameter.type.kind, i > 0,
               case .decoded("open_flags", _) = parameters[parameters.startIndex + i - 1].type.kind,
               (slots[i - 1].words.first ?? 0) & 0o20100100 == 0 {
                continue
            }
            var value: ArgumentValue
            switch parameter.type.kind {
            case .structure(_, let eightbytes):
                value = eightbytes != nil && !slot.location.hasPrefix("rsp+") ? .words(slot.words) : .inMemory(first)
            case .floating(let size) where size > 8:
                value = .inMemory(first)
            case .byReference:
                value = .inMemory(first)
            case .decoded(let decoder, _) where decoder.hasPrefix("buffer:"):
                // A byte buffer whose length is another parameter.
                let lengthIndex = Int(decoder.dropFirst(7)) ?? -1
                let length = lengthIndex >= 0 && lengthIndex < slots.count ? slots[lengthIndex].words.first ?? 0 : UInt64(ArgumentDecoder.stringLimit)
                value = ArgumentDecoder.buffer(at: first, length: length, read: read)
            default:
                value = ArgumentDecoder.value(of: parameter.type, words: slot.words, read: read)
            }
            result.append(TypedArgument(name: parameter.name.isEmpty ? "arg\(i)" : parameter.name, type: parameter.type.name,
                                        value: value, register: slot.location, raw: first))
        }
        return result
    }

    /// Every result at a return: Go's as `GoFrameLayout` places them (empty for none), else the one
    /// `result`.
    public func results(registers: Registers, vectors: [UInt64]?, read: Reader) -> [TypedArgument] {
        if let goLayout, !signature.results.isEmpty {
            return goLayout.results(signature, registers: registers, vectors: vectors, read: read)
        }
        return result(registers: registers, vectors: vectors, read: read).map { [$0] } ?? []
    }

    /// The result at a return: rax, or xmm0 (Go: the first of `results`); `void` for none.
    public func result(registers: Registers, vectors: [UInt64]?, read: Reader) -> TypedArgument? {
        if let goLayout, !signature.results.isEmpty {
            return goLayout.results(signature, registers: registers, vectors: vectors, read: read).first
        }
        guard let type = signature.result else {
            return TypedArgument(name: "", type: "void", value: .void, register: "rax", raw: registers.rax)
        }
        if type.isFloating {
            let bits = vectors?.first ?? 0
            return TypedArgument(name: "", type: type.name, value: ArgumentDecoder.value(of: type, words: [bits], read: read), register: "xmm0", raw: bits)
        }
        let words = [registers.rax, registers.rdx]
        let value: ArgumentValue
        switch type.kind {
        case .structure(_, let eightbytes?):
            // INTEGER eightbytes in rax then rdx, SSE ones in xmm0 then xmm1.
            var integers = [registers.rax, registers.rdx][...], sse = (vectors ?? [0, 0])[...]
            value = .words(eightbytes.map { $0 ? sse.popFirst() ?? 0 : integers.popFirst() ?? 0 })
        case .structure, .byReference: value = .inMemory(registers.rax)  // rax holds the hidden pointer
        default: value = ArgumentDecoder.value(of: type, words: words, read: read)
        }
        return TypedArgument(name: "", type: type.name, value: value, register: "rax", raw: registers.rax)
    }

    /// `words` (one per register the value occupies) as `type` says.
    static func value(of type: DebugType, words: [UInt64], read: Reader) -> ArgumentValue {
        let bits = words.first ?? 0
        switch type.kind {
        case .signed(let size): return .signed(signExtend(bits, size: size))
        case .unsigned(let size): return .unsigned(size >= 8 ? bits : bits & ((1 << UInt64(size * 8)) - 1))
        case .boolean: return .boolean(bits & 0xff != 0)
        case .character: return .character(UInt8(truncatingIfNeeded: bits))
        case .floating(let size):
            return size == 4 ? .floating(Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits))), single: true)
                             : .floating(Double(bitPattern: bits), single: false)
        case .string: return cString(at: bits, read: read)
        case .pointer: return .pointer(bits)
        case .enumeration(let size, let isSigned, let cases):
            let value = isSigned ? signExtend(bits, size: size) : Int64(bitPattern: size >= 8 ? bits : bits & ((1 << UInt64(size * 8)) - 1))
            return .enumerator(cases.first { $0.value == value }?.name, value)
        case .decoded(let decoder, let size):
            let value = size >= 8 ? bits : bits & ((1 << UInt64(size * 8)) - 1)
            return .decoded(ArgumentFlags.decode(decoder, value, read: read), value)
        case .goString:
            let length = words.count > 1 ? words[1] : 0
            return buffer(at: bits, length: length, read: read)
        case .goSlice:
            return .slice(bits, length: words.count > 1 ? words[1] : 0, capacity: words.count > 2 ? words[2] : 0)
        case .goInterface:
            return .words(Array(words.prefix(2)))
        case .complex, .goStruct, .goArray, .other: return .raw(bits)
        case .structure, .byReference: return .inMemory(bits)
        }
    }

    static func signExtend(_ bits: UInt64, size: Int) -> Int64 {
        guard size < 8 else { return Int64(bitPattern: bits) }
        let shift = UInt64(64 - size * 8)
        return Int64(bitPattern: bits << shift) >> Int64(shift)
    }

    /// A NUL-terminated string, at most `stringLimit` bytes, read page by page (the page after may
    /// be unmapped).
    static func cString(at address: UInt64, read: Reader) -> ArgumentValue {
        guard address != 0 else { return .string(nil, address: 0, truncated: false) }
        let want = stringLimit + 1
        var bytes: [UInt8] = []
        var at = address
        while bytes.count < want {
            let pageEnd = (at | 0xfff) &+ 1
            let count = Int(min(UInt64(want - bytes.count), pageEnd &- at))
            guard let chunk = read(at, count), !chunk.isEmpty else {
                return bytes.isEmpty ? .string(nil, address: address, truncated: false) : .string(bytes, address: address, truncated: true)
            }
            if let nul = chunk.firstIndex(of: 0) {
                bytes += chunk[..<nul]
                return .string(bytes, address: address, truncated: false)
            }
            bytes += chunk
            at &+= UInt64(count)
        }
        return .string(Array(bytes.prefix(stringLimit)), address: address, truncated: true)
    }

    /// `length` bytes (at most `stringLimit` shown) at `address`.
    static func buffer(at address: UInt64, length: UInt64, read: Reader) -> ArgumentValue {
        guard address != 0 else { return .string(nil, address: 0, truncated: false) }
        let shown = Int(min(length, UInt64(stringLimit)))
        guard shown > 0 else { return .string([], address: address, truncated: false) }
        guard let bytes = read(address, shown) else { return .string(nil, address: address, truncated: false) }
        return .string(bytes, address: address, truncated: length > UInt64(shown))
    }
}
