import Testing
import GraftCore
@testable import GraftELF

@Suite struct LocationTests {
    func parsed(_ text: String) throws -> Location { try Location.parse(text) }

    @Test(arguments: [
        ("getpid", Location(base: .symbol(module: nil, name: "getpid"))),
        ("  getpid\t", Location(base: .symbol(module: nil, name: "getpid"))),
        ("libc:getpid", Location(base: .symbol(module: "libc", name: "getpid"))),
        ("libc.so.6:getpid", Location(base: .symbol(module: "libc.so.6", name: "getpid"))),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6:getpid", Location(base: .symbol(module: "/usr/lib/x86_64-linux-gnu/libc.so.6", name: "getpid"))),
        ("ld-linux-x86-64.so.2:_dl_catch_error", Location(base: .symbol(module: "ld-linux-x86-64.so.2", name: "_dl_catch_error"))),
        ("libstdc++.so.6:_ZNSt6vectorIiSaIiEE9push_backERKi", Location(base: .symbol(module: "libstdc++.so.6", name: "_ZNSt6vectorIiSaIiEE9push_backERKi"))),
        ("libstdc++.so.6:f+0x10", Location(base: .symbol(module: "libstdc++.so.6", name: "f"), offset: 16)),
        ("getpid+4", Location(base: .symbol(module: nil, name: "getpid"), offset: 4)),
        ("getpid + 0x1F", Location(base: .symbol(module: nil, name: "getpid"), offset: 31)),
        ("libc:getpid+0X10", Location(base: .symbol(module: "libc", name: "getpid"), offset: 16)),
        ("main.a+0x4", Location(base: .symbol(module: nil, name: "main.a"), offset: 4)),
        ("main.(*T).M", Location(base: .symbol(module: nil, name: "main.(*T).M"))),
        ("victim:main.(*T).M+2", Location(base: .symbol(module: "victim", name: "main.(*T).M"), offset: 2)),
        ("ns::Class::method", Location(base: .symbol(module: nil, name: "ns::Class::method"))),
        ("libfoo.so:ns::f", Location(base: .symbol(module: "libfoo.so", name: "ns::f"))),
        ("std::vector<int>::size", Location(base: .symbol(module: nil, name: "std::vector<int>::size"))),
        ("main.(*T):x", Location(base: .symbol(module: nil, name: "main.(*T):x"))),
        ("memcpy@GLIBC_2.2.5", Location(base: .symbol(module: nil, name: "memcpy@GLIBC_2.2.5"))),
        ("$x.foo_bar", Location(base: .symbol(module: nil, name: "$x.foo_bar"))),
        ("0x401000", Location(base: .address(0x401000))),
        ("0X7FFFF7A3B000+8", Location(base: .address(0x7ffff7a3b000), offset: 8)),
        ("0xffffffffffffffff", Location(base: .address(UInt64.max))),
        ("getpid+9223372036854775807", Location(base: .symbol(module: nil, name: "getpid"), offset: Int64.max)),
    ])
    func validForms(text: String, expected: Location) throws {
        #expect(try parsed(text) == expected)
    }

    @Test(arguments: [
        ("", "the location is empty"),
        ("   ", "the location is empty"),
        ("getpid+", "missing offset after '+'"),
        ("+4", "missing function name or address before '+'"),
        ("getpid+x", "'x' is not an offset (use decimal digits or 0x followed by hex digits)"),
        ("getpid+0x", "'0x' is not an offset (use decimal digits or 0x followed by hex digits)"),
        ("getpid+0xg1", "'0xg1' is not an offset (use decimal digits or 0x followed by hex digits)"),
        ("getpid+-4", "offsets cannot be negative; write the address or NAME+OFFSET"),
        ("getpid-4", "offsets cannot be negative or written with '-'; use NAME+OFFSET"),
        ("getpid+9223372036854775808", "offset '9223372036854775808' is too large"),
        ("getpid+99999999999999999999", "offset '99999999999999999999' does not fit in 64 bits"),
        ("value_a+99999999999999999999", "offset '99999999999999999999' does not fit in 64 bits"),
        ("getpid+0x10000000000000000", "offset '0x10000000000000000' does not fit in 64 bits"),
        ("getpid+0x１２", "'0x１２' is not an offset (use decimal digits or 0x followed by hex digits)"),
        ("getpid+１２", "'１２' is not an offset (use decimal digits or 0x followed by hex digits)"),
        ("getpid+1+2", "only one +OFFSET is allowed"),
        ("getpid++2", "only one +OFFSET is allowed"),
        (":getpid", "missing module name before ':'"),
        ("libc:", "missing function name after 'libc:'"),
        ("libc:+4", "missing function name after 'libc:'"),
        ("0x", "'0x' has no hex digits after 0x"),
        ("0x12zz", "'0x12zz' is not a hexadecimal address (0x followed by the ASCII digits 0-9, a-f)"),
        ("0x１２", "'0x１２' is not a hexadecimal address (0x followed by the ASCII digits 0-9, a-f)"),
        ("0x1２", "'0x1２' is not a hexadecimal address (0x followed by the ASCII digits 0-9, a-f)"),
        ("0xＡＢ", "'0xＡＢ' is not a hexadecimal address (0x followed by the ASCII digits 0-9, a-f)"),
        ("0x10000000000000000", "address '0x10000000000000000' does not fit in 64 bits"),
        ("0xffffffffffffffff+1", "address plus offset does not fit in 64 bits"),
        ("4198400", "a function name cannot start with a digit; write addresses in hex with 0x"),
        ("libc:0x1000", "'0x1000' after a module is an address; write the address alone (0x...)"),
        ("get pid", "function names cannot contain spaces"),
        ("get\u{1}pid", "it contains the control character U+1"),
    ])
    func errors(text: String, reason: String) {
        #expect(graftError { _ = try parsed(text) } == .invalidLocation(text: text, reason: reason))
    }

    @Test func descriptionRoundTrips() throws {
        for text in ["getpid", "libc:getpid+0x4", "0x401000", "0x401000+0x10", "main.(*T).M", "ns::f"] {
            let location = try parsed(text)
            #expect(location.description == text)
            #expect(try parsed(location.description) == location)
        }
        #expect(try parsed("getpid+16").description == "getpid+0x10")
    }
}
