import Glibc
@testable import GraftKit
@testable import GraftPtrace
import Testing
import TestSupport

/// Go's typed arguments and results from DWARF, placed by Go's register ABI (`GoFrameLayout`):
/// go_typed calls each of its functions once per tick with fixed arguments, so every value is known.
@Suite struct GoTypedTests {
    static let functions = ["main.one", "main.nine", "main.ten", "main.divmod", "main.quorem", "main.lookup", "main.ratio",
                            "main.shift", "main.describe", "main.sumGrid", "main.spread", "main.cmul", "main.overflow", "main.gridOf", "main.mix",
                            "main.(*Counter).Add"]

    /// One session over every function, three ticks: the first call (and return) of each, by name.
    static func firstCalls() throws -> (calls: [String: [HookHit]], returns: [String: [HookReturn]]) {
        let victim = try Victim.launch("go_typed", arguments: ["5", "60"])
        defer { victim.kill() }
        let specs = functions.map { HookSpec(location: $0, argumentCount: 12, returns: true) }
        // 17 calls per tick (lookup twice): three ticks, and the third's returns are not needed.
        let run = HookRun(HookSession(pid: victim.pid, specs: specs, limits: HookLimits(count: 51), journal: temporaryJournal()))
        _ = try run.waitEnd(timeout: 60)
        return (Dictionary(grouping: run.hits, by: \.location), Dictionary(grouping: run.returns, by: \.location))
    }

    static func text(_ arguments: [TypedArgument]?) -> String {
        (arguments ?? []).map { "\($0.name)=\($0.value.text)@\($0.register)" }.joined(separator: ", ")
    }

    @Test func argumentsAndResultsAsGoPlacesThem() throws {
        let (calls, returns) = try GoTypedTests.firstCalls()
        func call(_ name: String, _ index: Int = 0) -> String {
            guard let hits = calls[name], hits.count > index else { return "no call of \(name)" }
            return GoTypedTests.text(hits[index].typedArguments)
        }
        func result(_ name: String, _ index: Int = 0) -> String {
            guard let values = returns[name], values.count > index else { return "no return of \(name)" }
            return values[index].resultText ?? "untyped"
        }
        // One, two and nine integer arguments; the tenth on the stack above the return address.
        #expect(call("main.one") == "x=5@rax" && result("main.one") == "6")
        #expect(call("main.nine") == "a=1@rax, b=2@rbx, c=3@rcx, d=4@rdi, e=5@rsi, f=6@r8, g=7@r9, h=8@r10, i=9@r11")
        #expect(result("main.nine") == "45")
        #expect(call("main.ten").hasSuffix("i=9@r11, j=10@rsp+8") && result("main.ten") == "55", "\(call("main.ten"))")
        // Several results: rax, rbx…; named ones by name.
        #expect(call("main.divmod") == "a=17@rax, b=5@rbx" && result("main.divmod") == "(3, 2)")
        #expect(returns["main.divmod"]?.first?.typedValues?.map(\.register) == ["rax", "rbx"])
        #expect(result("main.quorem") == "(q=3, r=2)")
        // (string, error): the string in rax+rbx, the error interface in rcx+rdi; a nil one is nil.
        #expect(call("main.lookup", 0) == "key=\"pear\"@rax+rbx" && result("main.lookup", 0) == "(\"green\", nil)",
                "\(result("main.lookup", 0))")
        #expect(call("main.lookup", 1) == "key=\"plum\"@rax+rbx")
        #expect(result("main.lookup", 1).hasPrefix("(\"\", {0x") && result("main.lookup", 1).hasSuffix("})"), "\(result("main.lookup", 1))")
        #expect(returns["main.lookup"]?.first?.typedValues?.map(\.register) == ["rax+rbx", "rcx+rdi"])
        // (float64, bool): X0 then rax.
        #expect(call("main.ratio") == "a=3.0@xmm0, b=4.0@xmm1" && result("main.ratio") == "(0.75, true)")
        #expect(returns["main.ratio"]?.first?.typedValues?.map(\.register) == ["xmm0", "rax"])
        // A struct argument field by field, then an int in the next register; a struct result.
        #expect(call("main.shift") == "p={X:1, Y:2}@rax+rbx, by=10@rcx" && result("main.shift") == "{X:11, Y:12}")
        #expect(call("main.describe") == "p={ID:7, Ratio:0.5, Name:\"seven\"}@rax+xmm0+rbx+rcx, n=3@rdi", "\(call("main.describe"))")
        #expect(result("main.describe") == "10")
        // An array of 3 is never in registers: the whole struct on the stack, k takes rax.
        #expect(call("main.sumGrid") == "g={Cells:[4, 5, 6]}@rsp+8, k=2@rax" && result("main.sumGrid") == "17", "\(call("main.sumGrid"))")
        // Ten results: nine registers, the tenth in the results' stack area (at the return, rsp+0).
        #expect(result("main.spread") == "(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)", "\(result("main.spread"))")
        #expect(returns["main.spread"]?.first?.typedValues?.last?.register == "rsp+0")
        // complex128: two X registers each.
        #expect(call("main.cmul") == "a=(1.0+2.0i)@xmm0+xmm1, b=(3.0+4.0i)@xmm2+xmm3" && result("main.cmul") == "(-5.0+10.0i)")
        // Eight ints leave one register: the Point goes whole to the stack, z still takes r11.
        #expect(call("main.overflow").hasSuffix("h=8@r10, p={X:9, Y:10}@rsp+8, z=11@r11") && result("main.overflow") == "66",
                "\(call("main.overflow"))")
        // A stack result follows the stack arguments: j at rsp+8 at the entry, the Grid at rsp+8 at the return.
        #expect(call("main.gridOf").hasSuffix("j=10@rsp+8") && result("main.gridOf") == "{Cells:[1, 2, 10]}", "\(result("main.gridOf"))")
        #expect(returns["main.gridOf"]?.first?.typedValue?.register == "rsp+8")
        // Small fields, a nested struct, [1]string; struct{} takes nothing; the float32 result in X1.
        let mixed = "{F:1.5, B:true, I:-3, P:0x"
        let mix = calls["main.mix"]?.first?.typedArguments ?? []
        #expect(mix.count == 3 && mix[0].value.text.hasPrefix(mixed) && mix[0].value.text.hasSuffix(", Inner:{X:4, Y:5}, One:[\"one\"]}"),
                "\(call("main.mix"))")
        #expect(mix.map(\.register) == ["xmm0+rax+rbx+rcx+rdi+rsi+r8+r9", "none", "r10"] && mix.count == 3 && mix[1].value.text == "{}"
                && mix[2].value.text == "200", "\(call("main.mix"))")
        #expect(result("main.mix").hasPrefix("({F:1.5, B:true, I:-6, P:0x") && result("main.mix").hasSuffix("}, 2.5)"), "\(result("main.mix"))")
        #expect(returns["main.mix"]?.first?.typedValues?.map(\.register) == ["xmm0+rax+rbx+rcx+rdi+rsi+r8+r9", "xmm1"])
        // A method with a pointer receiver: the receiver first, in rax.
        let add = call("main.(*Counter).Add")
        #expect(add.hasPrefix("c=0xc") && add.hasSuffix("@rax, d=2@rbx"), "\(add)")
        let counts = (returns["main.(*Counter).Add"] ?? []).compactMap { Int($0.resultText ?? "") }
        #expect(counts.count >= 2 && counts.allSatisfy { $0 % 2 == 0 } && counts[1] == counts[0] + 2, "\(counts)")
    }

    /// --json: `result` keeps the first result, `results` lists them all when there are several.
    @Test func jsonKeepsResultAndAddsResults() throws {
        let (_, returns) = try GoTypedTests.firstCalls()
        let divmod = try #require(returns["main.divmod"]?.first)
        #expect(divmod.resultJSONFields == #","result":{"type":"int","value":3,"register":"rax"},"#
                + #""results":[{"type":"int","value":3,"register":"rax"},{"type":"int","value":2,"register":"rbx"}]"#)
        let quorem = try #require(returns["main.quorem"]?.first)
        #expect(quorem.resultJSONFields.hasSuffix(#""results":[{"name":"q","type":"int","value":3,"register":"rax"},"#
                                                  + #"{"name":"r","type":"int","value":2,"register":"rbx"}]"#), "\(quorem.resultJSONFields)")
        let one = try #require(returns["main.one"]?.first)
        #expect(one.resultJSONFields == #","result":{"type":"int","value":6,"register":"rax"}"#)
        let shift = try #require(returns["main.shift"]?.first)
        #expect(shift.resultJSONFields == #","result":{"type":"main.Point","value":{"X":11,"Y":12},"register":"rax+rbx"}"#,
                "\(shift.resultJSONFields)")
    }

    /// Without DWARF (-ldflags=-s drops it with .symtab) the same hooks show raw registers.
    @Test func strippedGoBinaryShowsRawValues() throws {
        let victim = try Victim.launch("go_loop_stripped")
        defer { victim.kill() }
        let run = HookRun(HookSession(pid: victim.pid, specs: [HookSpec(location: "main.add", argumentCount: 2, returns: true)],
                                      limits: HookLimits(count: 2), journal: temporaryJournal()))
        _ = try run.waitEnd(timeout: 30)
        #expect(run.hits.count == 2 && run.hits.allSatisfy { $0.typedArguments == nil && $0.arguments == [3, 4] })
        #expect(!run.returns.isEmpty && run.returns.allSatisfy { $0.value == 7 && $0.typedValue == nil && $0.resultText == nil })
    }
}

/// `GoFrameLayout` on signatures built by hand: the ABI's rules without a process.
@Suite struct GoFrameLayoutTests {
    static let int = DebugType("int", .signed(8))
    static let float = DebugType("float64", .floating(8))
    static func parameters(_ types: [DebugType]) -> [DebugParameter] {
        types.enumerated().map { DebugParameter(name: "p\($0.offset)", type: $0.element) }
    }

    /// A struct that does not fit the registers left goes whole to the stack and takes none; the
    /// next int still gets the next register.
    @Test func aStructThatDoesNotFitTakesNoRegisters() {
        let point = DebugType("main.Point", .goStruct(size: 16, fields: [DebugField(name: "X", offset: 0, type: Self.int),
                                                                      DebugField(name: "Y", offset: 8, type: Self.int)]))
        let signature = FunctionSignature(name: "f", parameters: Self.parameters(Array(repeating: Self.int, count: 8) + [point, Self.int]),
                                          result: nil, source: "test")
        let layout = GoFrameLayout(signature: signature)
        #expect(layout.arguments[8].placement == .stack(0))
        #expect(layout.arguments[9].placement == .registers([8]))
    }

    /// Stack arguments are aligned to their type; results' stack slots follow them, rounded to 8.
    @Test func stackSlotsAreAlignedAndResultsFollowArguments() {
        let small = DebugType("int32", .signed(4))
        let array = DebugType("[2]int32", .goArray(count: 2, element: small))
        let signature = FunctionSignature(name: "f", parameters: Self.parameters([array, small, array]),
                                          result: array, results: Self.parameters([array, Self.float]), source: "test")
        let layout = GoFrameLayout(signature: signature)
        #expect(layout.arguments.map(\.placement) == [.stack(0), .registers([0]), .stack(8)])
        #expect(layout.results.map(\.placement) == [.stack(16), .registers([0])])
        #expect(layout.resultsUseVectors && !layout.argumentsUseVectors)
    }

    /// A type graft cannot lay out hides itself and the later arguments, not the earlier ones.
    @Test func anUnknownTypeStopsTheArgumentsAfterIt() {
        let wide = DebugType("big", .other(size: 32))
        let signature = FunctionSignature(name: "f", parameters: Self.parameters([Self.int, wide, Self.int]), result: nil, source: "test")
        let layout = GoFrameLayout(signature: signature)
        #expect(layout.arguments[0].placement == .registers([0]))
        if case .unknown = layout.arguments[1].placement {} else { Issue.record("\(layout.arguments[1])") }
        if case .unknown = layout.arguments[2].placement {} else { Issue.record("\(layout.arguments[2])") }
    }

    @Test func multiResultText() {
        let three = TypedArgument(name: "~r0", type: "int", value: .signed(3), register: "rax", raw: 3)
        let two = TypedArgument(name: "~r1", type: "int", value: .signed(2), register: "rbx", raw: 2)
        #expect([three, two].resultText == "(3, 2)")
        let q = TypedArgument(name: "q", type: "int", value: .signed(3), register: "rax", raw: 3)
        let r = TypedArgument(name: "r", type: "int", value: .signed(2), register: "rbx", raw: 2)
        #expect([q, r].resultText == "(q=3, r=2)")
        let many = ArgumentValue.fields((0..<8).map { ArgumentField(name: "F\($0)", value: .signed(Int64($0))) }, more: 2)
        #expect(many.text == "{F0:0, F1:1, F2:2, F3:3, F4:4, F5:5, F6:6, F7:7, …}")
    }
}

/// Odd DWARF (or a Go type too large to pass) never traps: sizes that overflow, negative or huge
/// lengths, field offsets past the struct, deep nesting; and a huge value on the stack is read only
/// as far as what is shown.
@Suite struct GoFrameLayoutOddTypesTests {
    static let int = GoFrameLayoutTests.int

    static func layout(_ types: [DebugType]) -> GoFrameLayout {
        GoFrameLayout(signature: FunctionSignature(name: "f", parameters: GoFrameLayoutTests.parameters(types), result: types.last,
                                                   results: GoFrameLayoutTests.parameters(types), source: "test"))
    }

    @Test func oddSizesAndLengthsAreUnknownOrBounded() {
        var deep = Self.int
        for _ in 0..<100 { deep = DebugType("S", .goStruct(size: 8, fields: [DebugField(name: "F", offset: 0, type: deep)])) }
        var deepArray = Self.int
        for _ in 0..<100 { deepArray = DebugType("[2]A", .goArray(count: 2, element: deepArray)) }
        let odd: [DebugType] = [
            DebugType("[huge]int", .goArray(count: Int.max, element: Self.int)),
            DebugType("[huge][huge]int", .goArray(count: 1 << 40, element: DebugType("[huge]int", .goArray(count: 1 << 40, element: Self.int)))),
            DebugType("[-1]int", .goArray(count: -1, element: Self.int)),
            DebugType("far", .goStruct(size: 16, fields: [DebugField(name: "X", offset: Int.max, type: Self.int)])),
            DebugType("before", .goStruct(size: 16, fields: [DebugField(name: "X", offset: -8, type: Self.int)])),
            DebugType("vast", .goStruct(size: Int.max, fields: nil)),
            DebugType("vast2", .goStruct(size: Int.max - 7, fields: nil)),
            deep, deepArray,
        ]
        for type in odd {
            let layout = Self.layout([type, Self.int, type])
            #expect(layout.arguments.count == 3 && layout.results.count == 3, "\(type.name)")
        }
        // All together: each later slot is after values whose sizes would overflow.
        let all = Self.layout(odd + [Self.int])
        #expect(all.arguments.count == odd.count + 1)
    }

    @Test func aHugeStackValueIsReadOnlyAsFarAsShown() {
        let million = DebugType("[1000000]int", .goArray(count: 1_000_000, element: Self.int))
        let layout = Self.layout([million, Self.int])
        #expect(layout.arguments[0].placement == .stack(0))
        var largest = 0
        let registers = Registers(raw: user_regs_struct())
        let values = layout.arguments(FunctionSignature(name: "f", parameters: GoFrameLayoutTests.parameters([million, Self.int]), result: nil, source: "test"),
                                      limit: 2, registers: registers, vectors: nil,
                                      read: { _, count in largest = max(largest, count); return [UInt8](repeating: 1, count: min(count, 1 << 20)) })
        #expect(largest <= 4096, "read \(largest) bytes")
        #expect(values.first?.value.text == "[72340172838076673, 72340172838076673, 72340172838076673, 72340172838076673, 72340172838076673, 72340172838076673, 72340172838076673, 72340172838076673, …]",
                "\(values.first?.value.text ?? "none")")
    }
}
