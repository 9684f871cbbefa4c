import GraftELF
import Testing

/// The toolchains' demanglers behind `Demangler`: each mangling graft names (issue 13).
@Suite struct DemanglerTests {
    @Test(arguments: [
        ("_ZNK6shapes6Circle4areaEv", "shapes::Circle::area() const"),  // C++ (Itanium)
        ("_ZN3foo3bar17h0123456789abcdefE", "foo::bar"),                 // Rust legacy: the hash dropped
        ("_RNvCskwGfYPst2Cb_3foo16example_function", "foo::example_function"),  // Rust v0
        ("_RNvMNtCs4fqI2P2rA04_7mycrate5shapeNtB2_6Circle4area", "<mycrate::shape::Circle>::area"),  // v0 inherent method
        ("$s4main5priceyS2iF", "main.price(Swift.Int) -> Swift.Int"),  // Swift
    ])
    func demangles(_ mangled: String, _ expected: String) {
        #expect(Demangler.demangle(mangled) == expected)
        #expect(SymbolNames.demangled(mangled) == expected)
    }

    @Test func namesThatAreNotManglingStayAsTheyAre() {
        for name in ["main", "_Rb_tree_increment_x", "_Z", "ngx_http_init", "_RNotValid"] {
            #expect(SymbolNames.demangled(name) == name, "\(name)")
        }
    }
}
