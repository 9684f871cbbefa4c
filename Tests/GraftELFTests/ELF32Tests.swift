import Testing
import GraftCore
import GraftELF
import TestSupport

/// 32-bit ELF files (ELFCLASS32: i386, ARM), read as `graft patch --file` reads them, checked against readelf.
@Suite struct ELF32Tests {
    @Test(.enabled(if: CrossTools.installed("arm-linux-gnueabihf-gcc"), "arm-linux-gnueabihf-gcc is not installed (make deps)"),
          arguments: ["file_price_arm", "file_price_thumb"])
    func arm(victim: String) throws {
        let path = try Victims.path(victim)
        let elf = try ELFFile(path: path)
        #expect(!elf.is64Bit && elf.elfClass == 1)
        #expect(elf.machine == 40)
        #expect(!elf.isPositionIndependent)
        try checkAgainstReadelf(elf, path: path)
        let price = try #require(elf.symbols(named: "price").first)
        // A Thumb function's symbol has bit 0 set; an A32 function's does not.
        #expect(price.value & 1 == (victim == "file_price_thumb" ? 1 : 0))
        #expect(price.size > 8)
        // Mapping symbols ($a/$t/$d) are there, and are no functions.
        #expect(!elf.definedSymbols { $0 == "$d" || $0.hasPrefix("$d.") }.isEmpty)
        #expect(!elf.functionSymbols.contains { $0.name.hasPrefix("$") })
        #expect(throws: GraftError.self) { try elf.dynamicInfo() }
    }

    @Test(.enabled(if: CrossTools.installed("i686-linux-gnu-gcc"), "i686-linux-gnu-gcc is not installed (make deps)"))
    func i386() throws {
        let path = try Victims.path("file_price_i386")
        let elf = try ELFFile(path: path)
        #expect(!elf.is64Bit && elf.machine == 3)
        try checkAgainstReadelf(elf, path: path)
    }

    /// Entry, PT_LOAD segments, every sized function symbol, build-id, and the bytes at `price`.
    private func checkAgainstReadelf(_ elf: ELFFile, path: String) throws {
        let entryLine = run("readelf -hW \(path)").split(separator: "\n").first { $0.contains("Entry point address:") } ?? ""
        #expect(entryLine.hasSuffix(" \(hex(elf.entry))"))
        let loads = readelfLoads(path)
        #expect(elf.loadSegments.count == loads.count)
        for (segment, load) in zip(elf.loadSegments, loads) {
            #expect(segment.vaddr == load.vaddr && segment.offset == load.offset && segment.filesz == load.filesz && segment.memsz == load.memsz)
            #expect(segment.executable == load.flags.contains("E"))
        }
        struct Row: Hashable { var name: String, value: UInt64, size: UInt64 }
        let theirs = Set(readelfFunctions(path, dynamicOnly: false).filter { $0.size > 0 }.map { Row(name: $0.bareName, value: $0.value, size: $0.size) })
        let ours = Set(elf.functionSymbols.filter { $0.size > 0 }.map { Row(name: $0.name, value: $0.value, size: $0.size) })
        #expect(ours == theirs)
        let buildID = run("readelf -nW \(path)").split(separator: "\n").first { $0.contains("Build ID:") }?.split(separator: " ").last.map(String.init)
        #expect(elf.buildID == buildID)
        let price = try #require(elf.symbols(named: "price").first)
        let start = price.value & ~1
        let offset = try #require(elf.fileOffset(forVirtualAddress: start))
        #expect(elf.bytes(atVirtualAddress: start, count: Int(price.size)) == readFile(path, offset: offset, count: Int(price.size)))
    }
}
