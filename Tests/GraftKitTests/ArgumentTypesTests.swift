import Testing
import GraftELF
@testable import GraftKit

/// The pure parts of typed arguments: prototypes, flag tables, escaping, integer widths.
@Suite struct ArgumentTypesTests {
    @Test func prototypesParse() throws {
        #expect(LibcPrototypes.declarations.allSatisfy { LibcPrototypes.parse($0) != nil },
                "\(LibcPrototypes.declarations.filter { LibcPrototypes.parse($0) == nil })")
        let open = try #require(LibcPrototypes.signature(for: "open@@GLIBC_2.2.5"))
        #expect(open.parameters.map(\.name) == ["path", "flags", "mode"] && open.result == DebugType("int", .signed(4)))
        #expect(open.parameters[0].type.kind == .string && open.parameters[1].type.kind == .decoded("open_flags", size: 4))
        #expect(LibcPrototypes.signature(for: "__libc_malloc")?.parameters.map(\.name) == ["size"])
        #expect(LibcPrototypes.signature(for: "__open64_nocancel")?.name == "open64")
        #expect(LibcPrototypes.signature(for: "printf")?.variadic == true)
        #expect(LibcPrototypes.signature(for: "free")?.result == nil)
        #expect(LibcPrototypes.signature(for: "no_such_function") == nil)
    }

    @Test(arguments: [(UInt64(0), "O_RDONLY"), (0o2000000, "O_RDONLY|O_CLOEXEC"), (0o1101, "O_WRONLY|O_CREAT|O_TRUNC"),
                      (0o4010002, "O_RDWR|O_SYNC"), (0o20200000, "O_RDONLY|O_TMPFILE"), (0x40000000, "O_RDONLY|0x40000000")])
    func openFlags(value: UInt64, text: String) {
        #expect(ArgumentFlags.openFlags(value) == text)
    }

    @Test func otherTables() {
        let none: ArgumentDecoder.Reader = { _, _ in nil }
        #expect(ArgumentFlags.decode("mmap_prot", 3, read: none) == "PROT_READ|PROT_WRITE")
        #expect(ArgumentFlags.decode("mmap_prot", 0, read: none) == "PROT_NONE")
        #expect(ArgumentFlags.decode("mmap_flags", 0x22, read: none) == "MAP_PRIVATE|MAP_ANONYMOUS")
        #expect(ArgumentFlags.decode("socket_type", 0o2000001, read: none) == "SOCK_STREAM|SOCK_CLOEXEC")
        #expect(ArgumentFlags.decode("signal", 15, read: none) == "SIGTERM")
        #expect(ArgumentFlags.decode("mode", 0o644, read: none) == "0644")
        let inet: ArgumentDecoder.Reader = { _, count in Array([2, 0, 0x1f, 0x90, 127, 0, 0, 1] + [UInt8](repeating: 0, count: 20)).prefix(count).map { $0 } }
        #expect(ArgumentFlags.sockaddr(at: 0x1000, read: inet) == "{AF_INET, 127.0.0.1:8080}")
        let inet6: ArgumentDecoder.Reader = { _, count in Array(([10, 0, 0, 80, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 15) + [1, 0, 0, 0, 0]).prefix(count)) }
        #expect(ArgumentFlags.sockaddr(at: 0x1000, read: inet6) == "{AF_INET6, [::1]:80}")
        #expect(ArgumentFlags.sockaddr(at: 0, read: none) == "NULL")
    }

    @Test func valuesByType() {
        let none: ArgumentDecoder.Reader = { _, _ in nil }
        #expect(ArgumentDecoder.value(of: DebugType("int", .signed(4)), words: [0xffff_ffff], read: none) == .signed(-1))
        #expect(ArgumentDecoder.value(of: DebugType("short", .signed(2)), words: [0x1234_fff9], read: none) == .signed(-7))
        #expect(ArgumentDecoder.value(of: DebugType("unsigned char", .unsigned(1)), words: [0x1c8], read: none) == .unsigned(200))
        #expect(ArgumentDecoder.value(of: DebugType("float", .floating(4)), words: [UInt64(Float(0.25).bitPattern)], read: none).text == "0.25")
        #expect(ArgumentDecoder.value(of: DebugType("char *", .string), words: [0], read: none).text == "NULL")
        #expect(ArgumentDecoder.value(of: DebugType("char *", .string), words: [0x10], read: none).text == "0x10")
        let cases = [DebugType.Enumerator(name: "RED", value: 1)]
        #expect(ArgumentDecoder.value(of: DebugType("enum c", .enumeration(size: 4, signed: false, cases: cases)), words: [1], read: none).text == "RED")
        #expect(ArgumentDecoder.value(of: DebugType("enum c", .enumeration(size: 4, signed: false, cases: cases)), words: [9], read: none).text == "9")
    }

    /// A string across a page boundary whose next page is unreadable; escapes; the bound.
    @Test func stringsAreBoundedAndEscaped() {
        let page: UInt64 = 0x10000
        let text = Array("tab\there \"q\"\u{1}".utf8)
        let start = page - UInt64(text.count)
        let unterminated: ArgumentDecoder.Reader = { address, count in
            guard address >= start, address + UInt64(count) <= page else { return nil }
            return Array(text[Int(address - start)..<Int(address - start) + count])
        }
        #expect(ArgumentDecoder.cString(at: start, read: unterminated).text == "\"tab\\there \\\"q\\\"\\x01\"...")
        let long: ArgumentDecoder.Reader = { _, count in [UInt8](repeating: UInt8(ascii: "a"), count: count) }
        #expect(ArgumentDecoder.cString(at: 0x1000, read: long) == .string([UInt8](repeating: UInt8(ascii: "a"), count: 64), address: 0x1000, truncated: true))
        #expect(ArgumentDecoder.buffer(at: 0x1000, length: 3, read: long).text == "\"aaa\"")
    }
}
