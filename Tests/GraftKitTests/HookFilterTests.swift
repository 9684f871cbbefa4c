import GraftKit
import Testing

/// `--filter` expressions: the grammar, errors pointing at the column, evaluation on a call's fields.
@Suite struct HookFilterTests {
    struct Call: HookFilterFields {
        var tid: Int32 = 4243
        var pid: Int32 = 4242
        var returnValue: UInt64? = nil
        var arguments: [UInt64] = []
        var named: [String: HookFilterValue] = [:]
        func argument(_ index: Int) -> UInt64? { index < arguments.count ? arguments[index] : nil }
        func value(named name: String) -> HookFilterValue? { named[name] }
    }

    func keeps(_ text: String, _ call: Call) throws -> Bool { try HookFilter(parsing: text).matches(call) }

    @Test func comparisonsOnEveryField() throws {
        let call = Call(returnValue: UInt64(bitPattern: -1), arguments: [3, 0x10, UInt64.max])
        #expect(try keeps("tid == 4243", call))
        #expect(try !keeps("tid != 4243", call))
        #expect(try keeps("pid == 4242", call))
        #expect(try keeps("arg0 > 2", call) && keeps("arg0 >= 3", call) && !keeps("arg0 > 3", call))
        #expect(try keeps("arg0 < 4", call) && keeps("arg0 <= 3", call) && !keeps("arg0 < 3", call))
        #expect(try keeps("arg1 == 0x10", call) && keeps("arg1 == 16", call) && keeps("0x10 == arg1", call))
        // Signed 64-bit: rax -1 is below 0; 0xffffffffffffffff is -1.
        #expect(try keeps("ret < 0", call) && keeps("ret == -1", call) && keeps("ret == 0xffffffffffffffff", call))
        #expect(try keeps("arg2 == -1", call))
        // A field a call does not have makes its comparison false (both ways).
        #expect(try !keeps("arg5 == 0", call) && !keeps("arg5 != 0", call))
        #expect(try !keeps("ret == 0", Call()))
    }

    @Test func andOrNotAndParentheses() throws {
        let call = Call(arguments: [3])
        #expect(try keeps("arg0 > 2 && tid == 4243", call))
        #expect(try !keeps("arg0 > 2 && tid == 1", call))
        #expect(try keeps("tid == 1 || arg0 == 3", call))
        // && binds tighter than ||.
        #expect(try keeps("tid == 1 && arg0 == 0 || pid == 4242", call))
        #expect(try !keeps("tid == 1 && (arg0 == 0 || pid == 4242)", call))
        #expect(try keeps("!(tid == 1)", call) && !keeps("!tid == 4243", call))
        #expect(try keeps("((arg0==3))&&tid>0", call))
    }

    @Test func namedValuesAndStrings() throws {
        let call = Call(named: ["qty": .integer(3), "item": .string("apple \"red\"")])
        let filter = try HookFilter(parsing: "qty > 2 && item == 'apple \"red\"'")
        #expect(filter.names == ["qty", "item"])
        #expect(filter.matches(call))
        #expect(try keeps(#"item == "apple \"red\"""#, call))
        #expect(try !keeps("item == 3", call))  // a string never equals an integer
        #expect(try !keeps("missing == 1", call))
    }

    @Test func whatTheSessionMustRead() throws {
        let filter = try HookFilter(parsing: "arg3 > 1 || (ret == 0 && arg0 == 2)")
        #expect(filter.highestArgument == 3 && filter.usesReturnValue && filter.names.isEmpty)
        #expect(try HookFilter(parsing: "tid == 1").highestArgument == nil)
        #expect(throws: (any Error).self) { try filter.check(for: [HookSpec(location: "f")]) }
        try filter.check(for: [HookSpec(location: "f", returns: true)])
        #expect(throws: (any Error).self) { try HookFilter(parsing: "qty > 2").check(for: [HookSpec(location: "f")]) }
        try HookFilter(parsing: "qty > 2").check(for: [HookSpec(location: "f")], names: ["qty"])
    }

    /// Each mistake is one line naming the column (1-based) and what is there.
    @Test(arguments: [
        ("tid = 4", "expected ==, !=, <, <=, > or >= at column 5 ('= 4')"),
        ("", "empty expression"),
        ("arg0 > 2 ||", "expected a field, a number or a string at column 12 (the end)"),
        ("(tid == 1", "expected ')' to close the '(' of column 1, at column 10 (the end)"),
        ("tid == 1)", "unbalanced ')' at column 9"),
        ("tid == 1 tid == 2", "expected && or || or the end at column 10"),
        ("arg0 > 0x", "not a number (decimal, or hex with 0x) at column 8"),
        ("arg0 > 12ab", "not a number (decimal, or hex with 0x) at column 8"),
        ("arg0 > 99999999999999999999", "does not fit in 64 bits at column 8"),
        ("arg16 > 1", "arg16: arguments go from arg0 to arg15 at column 1"),
        ("tid == 'x'", "a string compares only with a named parameter, not with an integer field at column 8"),
        ("1 == 2", "a comparison needs a field"),
        ("name == 'abc", "unterminated string at column 9"),
        ("tid == $", "expected a field, a number or a string at column 8"),
    ])
    func errorsPointAtTheColumn(text: String, message: String) throws {
        do {
            _ = try HookFilter(parsing: text)
            Issue.record("'\(text)' parsed")
        } catch {
            let line = "\(error)"
            #expect(line.hasPrefix("--filter '\(text)': ") && line.contains(message) && !line.contains("\n"), "\(line)")
        }
    }
}
