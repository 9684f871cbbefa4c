import Glibc
import Testing
import GraftCore
@testable import GraftELF

@Suite struct ELFFileTests {
    @Test func libcHeaderAndBuildID() throws {
        let elf = try ELFFile(path: libcPath)
        #expect(elf.path == libcPath)
        #expect(elf.isPositionIndependent)
        #expect(elf.machine == 62)
        #expect(!elf.hasSymtab)   // Debian strips libc
        #expect(elf.hasDynsym)
        let readelf = run("readelf -n \(libcPath)").split(separator: "\n")
            .first { $0.contains("Build ID:") }.map { String($0.split(separator: " ").last!) }
        let file = run("file -L \(libcPath)")
        let fromFile = file.split(separator: ",").first { $0.contains("BuildID[sha1]=") }
            .map { String($0.split(separator: "=").last!) }
        #expect(readelf != nil)
        #expect(elf.buildID?.count == 40)
        #expect(elf.buildID == readelf)
        #expect(elf.buildID == fromFile)
        let entry = run("readelf -hW \(libcPath)").split(separator: "\n").first { $0.contains("Entry point address:") }
        #expect(entry.map { number($0.split(separator: " ").last!) } == elf.entry)
    }

    @Test func libcGetpidMatchesReadelf() throws {
        let elf = try ELFFile(path: libcPath)
        let expected = try #require(readelfFunctions(libcPath).first { $0.name == "getpid@@GLIBC_2.2.5" })
        let found = elf.symbols(named: "getpid")
        #expect(found.count == 1)
        let getpid = try #require(found.first)
        #expect(getpid.name == "getpid")
        #expect(getpid.value == expected.value)
        #expect(getpid.size == expected.size)
        #expect(getpid.size == 8)
        #expect(getpid.kind == .function)
        #expect(getpid.isGlobal)         // WEAK counts as global
        #expect(getpid.fromDynsym)
        #expect(getpid.version == "GLIBC_2.2.5")
        #expect(getpid.isDefaultVersion)
        #expect(getpid.versionedName == "getpid@@GLIBC_2.2.5")
        // The alias __getpid shares the address; symbolization prefers the plain name.
        #expect(elf.symbols(named: "__getpid").first?.value == getpid.value)
        #expect(elf.symbol(containing: getpid.value)?.name == "getpid")
        #expect(elf.symbol(containing: getpid.value + 7)?.name == "getpid")
        #expect(elf.symbol(containing: getpid.value + 8)?.value != getpid.value)
        #expect(elf.symbols(named: "no_such_function_graft").isEmpty)
    }

    @Test func libcDynsymEqualsReadelf() throws {
        let elf = try ELFFile(path: libcPath)
        let rows = readelfFunctions(libcPath)
        #expect(rows.count > 2000)
        struct Key: Hashable { var name: String, value: UInt64 }
        let ours = elf.functionSymbols
        #expect(Set(ours.map { Key(name: $0.name, value: $0.value) }) == Set(rows.map { Key(name: $0.bareName, value: $0.value) }))
        let readelfFull = Set(rows.map { "\($0.name) \($0.value) \($0.size) \($0.type)" })
        for symbol in ours {
            let line = "\(symbol.versionedName) \(symbol.value) \(symbol.size) \(symbol.kind == .ifunc ? "IFUNC" : "FUNC")"
            #expect(readelfFull.contains(line), "\(line) not printed by readelf")
        }
        // Sorted by value, no (name, value) duplicates.
        #expect(zip(ours, ours.dropFirst()).allSatisfy { $0.value <= $1.value })
        #expect(Set(ours.map { Key(name: $0.name, value: $0.value) }).count == ours.count)
    }

    @Test func symbolVersions() throws {
        let elf = try ELFFile(path: libcPath)
        let rows = readelfFunctions(libcPath)
        let current = try #require(rows.first { $0.name == "memcpy@@GLIBC_2.14" })
        let old = try #require(rows.first { $0.name == "memcpy@GLIBC_2.2.5" })
        let memcpy = elf.symbols(named: "memcpy")
        #expect(memcpy.count == 2)
        #expect(memcpy.first?.value == current.value)   // default version first
        #expect(memcpy.first?.kind == (current.type == "IFUNC" ? .ifunc : .function))
        #expect(memcpy.first?.kind == .ifunc)
        #expect(elf.symbols(named: "memcpy@GLIBC_2.2.5").map(\.value) == [old.value])
        #expect(elf.symbols(named: "memcpy@GLIBC_2.2.5").first?.isDefaultVersion == false)
        #expect(elf.symbols(named: "memcpy@@GLIBC_2.14").map(\.value) == [current.value])
        #expect(elf.symbols(named: "memcpy@@GLIBC_2.2.5").isEmpty)
    }

    @Test func symbolContainingEveryFunction() throws {
        let elf = try ELFFile(path: libcPath)
        let sized = elf.functionSymbols.filter { $0.size > 0 }
        for symbol in sized {
            for address in [symbol.value, symbol.value + symbol.size - 1] {
                let found = try #require(elf.symbol(containing: address))
                #expect(found.contains(address))
                #expect(found.value >= symbol.value, "\(found) is not the innermost symbol at \(hex(address))")
            }
        }
        #expect(elf.symbol(containing: 0) == nil)
        #expect(elf.symbol(containing: UInt64.max) == nil)
    }

    @Test func bytesMatchObjdumpAndFile() throws {
        let elf = try ELFFile(path: libcPath)
        let getpid = try #require(elf.symbols(named: "getpid").first)
        let bytes = elf.bytes(atVirtualAddress: getpid.value, count: Int(getpid.size))
        // mov $0x27,%eax; syscall; ret
        #expect(bytes == [0xb8, 0x27, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xc3])
        let start = getpid.value, stop = getpid.value + getpid.size
        let dump = run("objdump -d --start-address=\(hex(start)) --stop-address=\(hex(stop)) \(libcPath)")
        var fromObjdump: [UInt8] = []
        for line in dump.split(separator: "\n") {
            let columns = line.split(separator: "\t")
            guard columns.count >= 2, columns[0].hasSuffix(":"), columns[0].hasPrefix(" ") else { continue }
            fromObjdump += columns[1].split(separator: " ").map { UInt8($0, radix: 16)! }
        }
        #expect(fromObjdump == bytes)
        let offset = try #require(elf.fileOffset(forVirtualAddress: getpid.value))
        #expect(readFile(libcPath, offset: offset, count: 8) == bytes)
        // Past the end of the file-backed part of the RW segment (.bss) and outside every segment.
        let rw = try #require(elf.loadSegments.last { $0.writable })
        #expect(rw.memsz > rw.filesz)
        #expect(elf.bytes(atVirtualAddress: rw.vaddr + rw.filesz, count: 1) == nil)
        #expect(elf.bytes(atVirtualAddress: rw.vaddr + rw.filesz - 4, count: 8) == nil)
        #expect(elf.bytes(atVirtualAddress: rw.vaddr + rw.filesz - 4, count: 4)?.count == 4)
        #expect(elf.bytes(atVirtualAddress: 0x7fff_0000_0000, count: 1) == nil)
        #expect(elf.bytes(atVirtualAddress: getpid.value, count: -1) == nil)
    }

    @Test func nonPIEExecutable() throws {
        let path = "/usr/bin/cc"
        #expect(run("file -L \(path)").contains("LSB executable"))
        let elf = try ELFFile(path: path)
        #expect(!elf.isPositionIndependent)
        let loads = readelfLoads(path)
        #expect(elf.loadSegments.count == loads.count)
        for (ours, theirs) in zip(elf.loadSegments, loads) {
            #expect(ours.vaddr == theirs.vaddr && ours.offset == theirs.offset && ours.filesz == theirs.filesz && ours.memsz == theirs.memsz)
            #expect(ours.executable == theirs.flags.contains("E"))
            #expect(ours.writable == theirs.flags.contains("W"))
        }
        #expect(elf.loadSegments.first?.vaddr == 0x400000)
        // A non-PIE executable mapped at its link address has bias 0.
        #expect(elf.loadBias(mappedAt: 0x400000, fileOffset: 0) == 0)
        let rows = readelfFunctions(path)
        #expect(!rows.isEmpty)
        for row in rows {
            let found = elf.symbols(named: row.bareName)
            #expect(found.map(\.value) == [row.value])
            #expect(found.map(\.size) == [row.size])
        }
        // Imports in a non-PIE executable may carry their PLT address: they are not definitions.
        let undefinedWithValue = run("readelf -W --dyn-syms \(path)").split(separator: "\n").compactMap { line -> String? in
            let f = line.split(separator: " ")
            guard f.count >= 8, f[3] == "FUNC", f[6] == "UND", UInt64(f[1], radix: 16) != 0 else { return nil }
            return String(f[7].prefix { $0 != "@" })
        }
        #expect(!undefinedWithValue.isEmpty)
        for name in undefinedWithValue { #expect(elf.symbols(named: name).isEmpty, "import \(name) listed as defined") }
        let entryOffset = try #require(elf.fileOffset(forVirtualAddress: elf.entry))
        #expect(elf.bytes(atVirtualAddress: elf.entry, count: 16) == readFile(path, offset: entryOffset, count: 16))
    }

    @Test func strippedPIEUsesDynsym() throws {
        let path = "/usr/bin/ls"
        let file = run("file -L \(path)")
        #expect(file.contains("pie executable") && file.contains("stripped"))
        let elf = try ELFFile(path: path)
        #expect(elf.isPositionIndependent)
        #expect(!elf.hasSymtab)
        let rows = readelfFunctions(path)
        #expect(rows.count >= 1)
        #expect(elf.functionSymbols.allSatisfy { $0.fromDynsym })
        #expect(elf.functionSymbols.map { "\($0.name) \($0.value) \($0.size)" }.sorted()
                == rows.map { "\($0.bareName) \($0.value) \($0.size)" }.sorted())
    }

    @Test func symtabOfCompiledVictimMatchesNm() throws {
        for path in [CompiledSample.paths.pie, CompiledSample.paths.noPie] {
            let elf = try ELFFile(path: path)
            #expect(elf.hasSymtab)
            #expect(elf.isPositionIndependent == (path == CompiledSample.paths.pie))
            struct Row: Hashable { var name: String, value: UInt64, size: UInt64, global: Bool }
            let nm = run("nm -S --defined-only \(path)").split(separator: "\n").compactMap { line -> Row? in
                let f = line.split(separator: " ")
                guard f.count == 4, f[2] == "t" || f[2] == "T" || f[2] == "i" || f[2] == "W" || f[2] == "w" else { return nil }
                return Row(name: String(f[3]), value: UInt64(f[0], radix: 16)!, size: UInt64(f[1], radix: 16)!, global: f[2] != "t")
            }
            // nm without -S omits nothing we keep, but lists size-less symbols only without -S; compare
            // the sized functions exactly.
            let ours = Set(elf.functionSymbols.filter { $0.size > 0 }.map { Row(name: $0.name, value: $0.value, size: $0.size, global: $0.isGlobal) })
            #expect(ours == Set(nm))
            let helpers = elf.symbols(named: "helper")
            #expect(helpers.count == 2)
            #expect(helpers.allSatisfy { !$0.isGlobal && !$0.fromDynsym })
            #expect(Set(helpers.map(\.value)).count == 2)
            let twice = try #require(elf.symbols(named: "graft_twice").first)
            #expect(twice.isGlobal && twice.kind == .function && twice.size > 0)
        }
    }

    @Test func formatErrors() throws {
        let dir = makeTempDirectory()
        let header = readFile(libcPath, offset: 0, count: 4096)
        var badClass = header; badClass[4] = 3
        writeFile(dir + "/elfclass3", badClass)
        #expect(graftError { _ = try ELFFile(path: dir + "/elfclass3") }
                == .elfFormat(path: dir + "/elfclass3", reason: "invalid ELF class 3"))
        var bigEndian = header; bigEndian[5] = 2
        writeFile(dir + "/elfbe", bigEndian)
        #expect(graftError { _ = try ELFFile(path: dir + "/elfbe") }
                == .elfFormat(path: dir + "/elfbe", reason: "big-endian ELF (ELFDATA2MSB) is not supported; graft reads little-endian ELF files only"))
        writeFile(dir + "/text", Array(String(repeating: "not an elf file\n", count: 8).utf8))
        #expect(graftError { _ = try ELFFile(path: dir + "/text") }
                == .elfFormat(path: dir + "/text", reason: "not an ELF file (no \\x7fELF magic)"))
        writeFile(dir + "/short", Array(header[0..<20]))
        #expect(graftError { _ = try ELFFile(path: dir + "/short") }
                == .elfFormat(path: dir + "/short", reason: "file is 20 bytes, too short for an ELF header"))
        var truncated = header; truncated[32] = 0xff; truncated[33] = 0xff; truncated[34] = 0xff   // e_phoff
        writeFile(dir + "/truncated", truncated)
        let error = graftError { _ = try ELFFile(path: dir + "/truncated") }
        guard case .elfFormat(_, let reason)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(reason.hasPrefix("the program header table at file offset 0xffffff"))
        #expect(graftError { _ = try ELFFile(path: dir) } == .elfFormat(path: dir, reason: "not a regular file"))
        #expect(graftError { _ = try ELFFile(path: dir + "/missing") }
                == .systemCall(name: "open", errno: ENOENT, context: dir + "/missing"))
        #expect(graftError { _ = try ELFFile(path: CompiledSample.paths.object) }
                == .elfFormat(path: CompiledSample.paths.object, reason: "ELF type ET_REL (relocatable object file) is not a program or shared library"))
    }
}

/// `name@plt` stubs, as objdump names them.
@Suite struct PLTStubTests {
    /// objdump's `<name@plt>` labels of the PLT sections (relocation-named ones only: `*ABS*+0x…@plt`
    /// stubs of IRELATIVE slots have no symbol).
    func objdumpStubs(_ path: String) -> Set<String> {
        var found: Set<String> = []
        for line in run("objdump -d -j .plt -j .plt.sec -j .plt.got \(path) 2>/dev/null").split(separator: "\n") {
            guard line.hasSuffix("@plt>:"), !line.contains("*ABS*"), let open = line.firstIndex(of: "<") else { continue }
            let address = line[..<open].trimmingCharacters(in: " ")
            let name = line[line.index(after: open)...].dropLast(2)
            found.insert("\(address) \(name)")
        }
        return found
    }

    @Test func stubsMatchObjdump() throws {
        for path in [CompiledSample.paths.pie, CompiledSample.paths.noPie, libcPath] {
            let elf = try ELFFile(path: path)
            let ours = Set(elf.pltSymbols.map { "\(String($0.value, radix: 16)) \($0.name)" })
            let theirs = objdumpStubs(path)
            #expect(!theirs.isEmpty, "\(path): objdump shows no stubs")
            #expect(ours == theirs, "\(path): only ours \(ours.subtracting(theirs).sorted().prefix(5)), only objdump's \(theirs.subtracting(ours).sorted().prefix(5))")
            if let printf = elf.pltSymbols.first(where: { $0.name == "printf@plt" }) {
                #expect(elf.pltSymbol(containing: printf.value + 5)?.name == "printf@plt")
                #expect(elf.symbol(containing: printf.value) == nil, "a stub is not a function symbol")
            }
        }
        // The function symbols (graft symbols, patch targets) do not include them.
        let elf = try ELFFile(path: CompiledSample.paths.pie)
        #expect(!elf.functionSymbols.contains { $0.name.hasSuffix("@plt") })
    }
}

private extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        var s = self
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        let digits = s.drop { $0 == "0" }
        return digits.isEmpty ? "0" : String(digits)
    }
}
