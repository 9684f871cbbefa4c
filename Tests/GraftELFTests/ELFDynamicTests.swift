import Glibc
import Testing
import GraftCore
import TestSupport
@testable import GraftELF

/// `ELFFile.dynamicInfo()` on the self-contained library victims (TestTargets/nostd_fix.c), an
/// ordinary library, libc and static/Go programs, compared with readelf.
@Suite struct ELFDynamicTests {
    /// libnostd.so: no DT_NEEDED, one .init_array entry, RELRO, no TLS, and readelf's relocations
    /// (offset, type, symbol, addend) exactly, RELATIVE, 64, GLOB_DAT and JUMP_SLOT among them.
    @Test func selfContainedLibraryMatchesReadelf() throws {
        let path = try Victims.path("libnostd.so")
        let elf = try ELFFile(path: path)
        #expect(elf.elfClass == 2 && elf.machine == 62 && elf.fileType == 3 && elf.isPositionIndependent)
        #expect(elf.osabi == 0)
        let info = try elf.dynamicInfo()
        #expect(info.hasDynamicSegment)
        #expect(info.needed.isEmpty)
        #expect(info.interpreter == nil)
        #expect(info.tls == nil)
        #expect(!info.hasTextRelocations && !info.hasRelTable && !info.hasRelrTable)
        #expect(info.initFunction == nil)   // -nostdlib: no crti.o, so no _init
        #expect(info.initArray?.size == 8)
        #expect(info.pltRelocationKind == 7)
        let relro = try #require(info.relro)
        #expect(relro.vaddr == info.initArray?.vaddr)   // .init_array opens the RELRO part

        let expected = readelfRelocations(path)
        #expect(expected.count == 12)  // 10, and GLOB_DAT for the two graft_original_ pointers
        #expect(info.relocations.map { Row(offset: $0.offset, type: $0.typeName, symbol: $0.symbolName ?? "", addend: $0.addend) } == expected)
        let types = Set(info.relocations.map(\.typeName))
        #expect(types == ["R_X86_64_RELATIVE", "R_X86_64_64", "R_X86_64_GLOB_DAT", "R_X86_64_JUMP_SLOT"])
        #expect(info.relocations.filter(\.isPLT).map(\.typeName) == ["R_X86_64_JUMP_SLOT", "R_X86_64_JUMP_SLOT"])

        // The target's price_base is a weak undefined reference; the library's own symbols are defined.
        let base = try #require(info.relocations.first { $0.symbolName == "price_base" }?.symbol)
        #expect(!base.isDefined && base.isWeak && base.value == 0)
        let helper = try #require(info.relocations.first { $0.symbolName == "nostd_helper" }?.symbol)
        #expect(helper.isDefined && !helper.isWeak && helper.kind == .function)
        #expect(helper.value == elf.definedSymbols(named: "nostd_helper").first?.value)
        // The .init_array entry is relocated RELATIVE to the constructor (a file-local symbol).
        let initSlot = try #require(info.relocations.first { $0.offset == info.initArray?.vaddr })
        #expect(initSlot.typeName == "R_X86_64_RELATIVE")
        #expect(UInt64(initSlot.addend) == elf.definedSymbols(named: "nostd_init").first?.value)
    }

    /// An ordinary library names the libraries it needs; libc has TLS and needs ld.so.
    @Test func neededLibrariesAndTLS() throws {
        let needs = try ELFFile(path: try Victims.path("libneeds.so")).dynamicInfo()
        #expect(needs.needed == ["libc.so.6"])
        #expect(needs.relocations.contains { $0.symbolName == "puts" && $0.typeName == "R_X86_64_JUMP_SLOT" })

        let libc = try ELFFile(path: libcPath).dynamicInfo()
        #expect(libc.needed == ["ld-linux-x86-64.so.2"])
        #expect(libc.soname == "libc.so.6")
        #expect(libc.tls != nil)
        #expect(libc.relocations.contains { $0.typeName == "R_X86_64_IRELATIVE" })
        #expect(libc.relocations.contains { $0.typeName == "R_X86_64_TPOFF64" })
        #expect(libc.relocations.count == readelfRelocations(libcPath).count)
    }

    /// A PIE program asks for an interpreter; a static C program and a Go program have no PT_DYNAMIC.
    @Test func programs() throws {
        let pie = try ELFFile(path: try Victims.path("c_loop")).dynamicInfo()
        #expect(pie.interpreter == "/lib64/ld-linux-x86-64.so.2")
        #expect(pie.needed == ["libc.so.6"])
        for name in ["static_loop", "go_loop"] {
            let elf = try ELFFile(path: try Victims.path(name))
            #expect(elf.fileType == 2 && !elf.isPositionIndependent, "\(name)")
            let info = try elf.dynamicInfo()
            #expect(!info.hasDynamicSegment && info.relocations.isEmpty && info.needed.isEmpty && info.interpreter == nil, "\(name)")
        }
        // static_loop's data symbol, for the library's reference to it.
        let staticLoop = try ELFFile(path: try Victims.path("static_loop"))
        #expect(staticLoop.definedSymbols(named: "price_base").first?.kind == .object)
    }

    /// Damaged dynamic sections are errors naming what is wrong, never traps: a DT_RELASZ far beyond
    /// the file or not a whole number of entries, tables outside every segment, a wrong entry size.
    @Test func malformedDynamicSectionsAreErrors() throws {
        let path = try Victims.path("libnostd.so")
        let original = readFile(path, offset: 0, count: 1 << 20)
        let dynamicOffset = try #require(dynamicSectionOffset(path))
        let dir = makeTempDirectory()
        defer { _ = run("rm -rf \(dir)") }

        /// The file with the value of dynamic tag `tag` replaced, parsed.
        func damaged(tag: UInt64, value: UInt64) -> GraftError? {
            var bytes = original
            var entry = Int(dynamicOffset)
            while entry + 16 <= bytes.count {
                let found = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[entry + $1]) << ($1 * 8) }
                if found == tag { break }
                if found == 0 { return nil }
                entry += 16
            }
            for i in 0..<8 { bytes[entry + 8 + i] = UInt8(truncatingIfNeeded: value >> (i * 8)) }
            let file = dir + "/lib-\(tag).so"
            writeFile(file, bytes)
            return graftError { _ = try ELFFile(path: file).dynamicInfo() }
        }
        #expect(damaged(tag: 8, value: 0xffff_ffff_ffff_fff0).map { "\($0)".contains("DT_RELA at") } == true)   // DT_RELASZ
        #expect(damaged(tag: 8, value: 25).map { "\($0)".contains("not a multiple of 24") } == true)
        #expect(damaged(tag: 5, value: 0x7fff_0000).map { "\($0)".contains("DT_STRTAB at 0x7fff0000 is not in the file part") } == true)
        #expect(damaged(tag: 23, value: 0x7fff_0000).map { "\($0)".contains("DT_JMPREL at 0x7fff0000 is not in the file part") } == true)
        #expect(damaged(tag: 11, value: 16).map { "\($0)".contains("DT_SYMENT is 16, not 24") } == true)
    }
}

struct Row: Equatable, CustomStringConvertible {
    var offset: UInt64, type: String, symbol: String, addend: Int64
    var description: String { "\(hex(offset)) \(type) \(symbol) \(addend)" }
}

/// `readelf -rW`: every dynamic relocation, in table order.
func readelfRelocations(_ path: String) -> [Row] {
    run("readelf -rW \(path)").split(separator: "\n").compactMap { line -> Row? in
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        guard f.count >= 4, f[2].hasPrefix("R_X86_64_"), let offset = UInt64(f[0], radix: 16) else { return nil }
        // `off info TYPE addend` or `off info TYPE value name + addend` (or `- addend`).
        if f.count == 4 { return Row(offset: offset, type: String(f[2]), symbol: "", addend: Int64(bitPattern: UInt64(f[3], radix: 16) ?? 0)) }
        let name = String(f[4].split(separator: "@").first ?? f[4])
        let magnitude = f.count >= 7 ? Int64(bitPattern: UInt64(f[6], radix: 16) ?? 0) : 0
        return Row(offset: offset, type: String(f[2]), symbol: name, addend: f.count >= 6 && f[5] == "-" ? -magnitude : magnitude)
    }
}

/// The file offset of PT_DYNAMIC, from `readelf -lW`.
func dynamicSectionOffset(_ path: String) -> UInt64? {
    run("readelf -lW \(path)").split(separator: "\n").lazy.compactMap { line -> UInt64? in
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        return f.first == "DYNAMIC" && f.count > 1 ? number(f[1]) : nil
    }.first
}
