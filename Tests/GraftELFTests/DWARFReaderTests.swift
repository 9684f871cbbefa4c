import Glibc
import Testing
import GraftCore
import TestSupport
@testable import GraftELF

/// DWARF through libdw: signatures of typed_args' functions, from the file itself and from its
/// separate debug file (build-id path, .gnu_debuglink).
@Suite struct DWARFReaderTests {
    func address(of name: String, in path: String) throws -> UInt64 {
        try #require(try ELFFile(path: path).symbols(named: name).first).value
    }

    @Test func signaturesFromTheProgramsDWARF() throws {
        let path = try Victims.path("typed_args")
        let reader = try #require(DWARFReader(path: path))
        let price = try #require(reader.signature(at: try address(of: "price", in: path)))
        #expect(price.name == "price" && !price.variadic)
        #expect(price.parameters == [DebugParameter(name: "item", type: DebugType("const char *", .string)),
                                     DebugParameter(name: "qty", type: DebugType("int", .signed(4)))])
        #expect(price.result == DebugType("int", .signed(4)))
        let scale = try #require(reader.signature(at: try address(of: "scale", in: path)))
        #expect(scale.parameters.map(\.type) == [DebugType("double", .floating(8)), DebugType("float", .floating(4)), DebugType("int", .signed(4))])
        let paint = try #require(reader.signature(at: try address(of: "paint", in: path)))
        guard case .enumeration(let size, _, let cases) = paint.parameters[0].type.kind else { Issue.record("\(paint)"); return }
        #expect(size == 4 && paint.parameters[0].type.name == "enum color")
        #expect(cases.map(\.name) == ["RED", "GREEN", "BLUE"] && cases.map(\.value) == [1, 2, 7])
        #expect(paint.parameters[1].type == DebugType("unsigned char", .unsigned(1)))
        let area = try #require(reader.signature(at: try address(of: "area", in: path)))
        #expect(area.parameters.map(\.type.kind) == [.structure(size: 8, eightbytes: [false]), .structure(size: 32, eightbytes: nil), .signed(2)])
        #expect(area.parameters.map(\.type.name) == ["struct point", "struct box", "short int"])
        let say = try #require(reader.signature(at: try address(of: "say", in: path)))
        #expect(say.result == nil)
        // Not a function's entry: nothing.
        #expect(reader.signature(at: try address(of: "price", in: path) + 1) == nil)
    }

    @Test func separateDebugFileByBuildIDAndDebugLink() throws {
        let path = try Victims.path("typed_args_stripped")
        let elf = try ELFFile(path: path)
        let id = try #require(elf.buildID)
        let debug = Victims.directory + "/debug"
        let expected = "\(debug)/.build-id/\(id.prefix(2))/\(id.dropFirst(2)).debug"
        #expect(DebugInfo.debugLink(of: path) == "\(id.dropFirst(2)).debug")
        #expect(DebugInfo.separateDebugFile(for: path, buildID: id, directories: [debug]) == expected)
        #expect(DebugInfo.separateDebugFile(for: path, buildID: id, directories: ["/nonexistent"]) == nil)
        // The stripped file's own DWARF has no subprograms.
        #expect(DWARFReader(path: path).flatMap { $0.signature(at: try! address(of: "price", in: path)) } == nil)
        let reader = try #require(DWARFReader(path: expected))
        let price = try #require(reader.signature(at: try address(of: "price", in: path)))
        #expect(price.parameters.map(\.name) == ["item", "qty"])
        // By .gnu_debuglink alone: the debug file next to a copy of the program.
        let folder = makeTempDirectory()
        #expect(run("cp \(path) \(folder)/prog && mkdir \(folder)/.debug && cp \(expected) \(folder)/.debug/ && echo ok") == "ok\n")
        #expect(DebugInfo.separateDebugFile(for: "\(folder)/prog", buildID: nil, directories: ["/nonexistent"]) == "\(folder)/.debug/\(id.dropFirst(2)).debug")
    }
}
