import Glibc
import GraftKit
import Testing
import TestSupport
@testable import GraftKit

/// `SelfContainedLoader.check` and the plan behind `map`, on files alone: what is refused and why,
/// the layout, the relocated words, the protections, the initializers.
@Suite struct LibraryLoadPlanTests {
    /// Link-time value of the library's symbol `name`.
    func value(_ elf: ELFFile, _ name: String) throws -> UInt64 {
        try #require(elf.definedSymbols(named: name).first, "no \(name) in \(elf.path)").value
    }

    /// libnostd.so: every relocation resolved (the library's own symbols from its .dynsym, the
    /// target's price_base from the resolver), the words written for a load bias, the pages'
    /// protections, and the constructor as the one initializer.
    @Test func selfContainedLibraryIsLaidOutAndRelocated() throws {
        let elf = try ELFFile(path: try Victims.path("libnostd.so"))
        try SelfContainedLoader.check(elf, resolve: { $0 == "price_base" ? 0x4a_60d0 : nil })
        let plan = try LibraryLoadPlan(elf, resolve: { $0 == "price_base" ? 0x4a_60d0 : nil })
        #expect(plan.first == 0 && plan.length % 4096 == 0)
        #expect(plan.targetSymbols == ["price_base": 0x4a_60d0] && plan.missingWeakSymbols.isEmpty)
        #expect(plan.fixups.count == 12)
        #expect(plan.initializers == [try value(elf, "nostd_init")])

        let base: UInt64 = 0x7f12_3456_0000
        var memory: [UInt64: UInt8] = [:]
        for region in plan.relocatedRegions(base: base) {
            for (i, byte) in region.bytes.enumerated() { memory[region.address + UInt64(i)] = byte }
        }
        func word(_ link: UInt64) -> UInt64 {
            (0..<8).reduce(UInt64(0)) { $0 | UInt64(memory[base + link + UInt64($1)] ?? 0) << UInt64($1 * 8) }
        }
        let info = try elf.dynamicInfo()
        for relocation in info.relocations {
            let written = word(relocation.offset)
            switch (relocation.typeName, relocation.symbolName) {
            case ("R_X86_64_RELATIVE", _):
                #expect(written == base + UInt64(relocation.addend), "\(relocation)")
            case (_, "price_base"):
                #expect(written == 0x4a_60d0, "\(relocation)")
            case (_, let name?):
                let symbol = try value(elf, name)
                #expect(written == base + symbol, "\(relocation)")
            default:
                Issue.record("unexpected relocation \(relocation)")
            }
        }
        // nostd_ops (R_X86_64_64) holds nostd_helper and nostd_negate; the code itself is the file's.
        let ops = try value(elf, "nostd_ops")
        let helper = try value(elf, "nostd_helper"), negate = try value(elf, "nostd_negate")
        #expect(word(ops) == base + helper && word(ops + 8) == base + negate)
        let price = try value(elf, "nostd_price")
        #expect(memory[base + price] == elf.bytes(atVirtualAddress: price, count: 1)?.first)

        // Protections: contiguous over the span; code r-x, nostd_ops (RELRO) r--, .bss rw-.
        #expect(plan.protections.first?.start == plan.first && plan.protections.last?.end == plan.first + plan.length)
        #expect(zip(plan.protections, plan.protections.dropFirst()).allSatisfy { $0.end == $1.start && $0.protection != $1.protection })
        func protection(at link: UInt64) -> Int32? { plan.protections.first { link >= $0.start && link < $0.end }?.protection }
        #expect(protection(at: price) == PROT_READ | PROT_EXEC)
        #expect(protection(at: ops) == PROT_READ)
        let calls = try value(elf, "nostd_calls")
        #expect(protection(at: calls) == PROT_READ | PROT_WRITE)
        #expect(protection(at: 0) == PROT_READ)   // the ELF header's segment
    }

    /// Without the target's price_base, the weak reference is 0, as ld.so makes it.
    @Test func aWeakSymbolNobodyDefinesIsZero() throws {
        let elf = try ELFFile(path: try Victims.path("libnostd.so"))
        let plan = try LibraryLoadPlan(elf, resolve: { _ in nil })
        #expect(plan.missingWeakSymbols == ["price_base"] && plan.targetSymbols.isEmpty)
        let slot = try #require(try elf.dynamicInfo().relocations.first { $0.symbolName == "price_base" }).offset
        #expect(plan.fixups.first { $0.offset == slot } == .init(offset: slot, addsBase: false, value: 0))
    }

    /// Each refusal names its reason and what to do: libraries needed (by name), a missing strong
    /// symbol (by name), a program, an executable, TLS, text relocations, an IFUNC, an unsupported
    /// relocation type (by name).
    @Test func refusalsNameTheirReason() throws {
        func refusal(_ path: String) -> String? {
            do {
                let elf = try ELFFile(path: path)
                try SelfContainedLoader.check(elf, resolve: { _ in nil })
                return nil
            } catch let error as GraftError {
                guard case .libraryRefused(let refused, _) = error, refused == path else { return "not a refusal: \(error)" }
                return "\(error)"
            } catch {
                return "\(error)"
            }
        }
        let needs = try Victims.path("libneeds.so")
        #expect(refusal(needs) == "graft will not load \(needs): graft maps it itself (no dynamic loader), and it needs libc.so.6; build it with -nostdlib (and without libraries: only a dynamic loader loads what a library needs); nothing was written")
        #expect(refusal(try Victims.path("libnostd_missing.so"))?.contains("it needs the symbol graft_no_such_symbol (R_X86_64_GLOB_DAT at 0x") == true)
        #expect(refusal(try Victims.path("c_loop"))?.contains("it is a program (it asks for the interpreter /lib64/ld-linux-x86-64.so.2), not a library") == true)
        #expect(refusal(try Victims.path("go_loop"))?.contains("it is not a shared object (ELF type ET_EXEC); build it with -shared -fPIC -nostdlib") == true)
        // libc.so.6 has a PT_INTERP too (it runs as a program), but a DT_SONAME: it is a library.
        #expect(refusal("/usr/lib/x86_64-linux-gnu/libc.so.6")?.contains("needs ld-linux-x86-64.so.2;") == true)

        let dir = try Sources.directory()
        defer { _ = try? runCommand("rm", ["-rf", dir]) }
        let tls = try Sources.build(dir, "libtls.so", "tls.c", "__thread int counter;\nint bump(void) { return ++counter; }\n")
        #expect(refusal(tls)?.contains("it has thread-local storage (PT_TLS at 0x") == true)
        let textrel = try Sources.build(dir, "libtextrel.so", "textrel.S", ".text\n.globl get\nget: movabs $value, %rax\nret\n.data\n.globl value\nvalue: .quad 5\n",
                                        flags: ["-Wl,-z,notext"], pic: false)
        #expect(refusal(textrel)?.contains("it has text relocations (DT_TEXTREL") == true)
        let ifunc = try Sources.build(dir, "libifunc.so", "ifunc.c", """
            static int one(void) { return 1; }
            static void *pick(void) { return one; }
            int chosen(void) __attribute__((ifunc("pick")));
            int use(void) { return chosen(); }
            """)
        #expect(refusal(ifunc)?.contains("its symbol chosen is an IFUNC (STT_GNU_IFUNC)") == true)
        let size = try Sources.build(dir, "libsize.so", "size.S", ".data\n.globl value\n.type value, @object\nvalue: .quad 5\n.size value, 8\n.globl value_size\nvalue_size: .quad value@SIZE\n")
        #expect(refusal(size)?.contains("it has a R_X86_64_SIZE64 relocation at 0x") == true)
        #expect(refusal(size)?.contains("(for value)") == true)
    }

    /// Damaged copies of libnostd.so (each byte of the headers, program headers, .dynsym, .rela and
    /// .dynamic set to 0xff, and each of their words to extreme values) give errors or plans, never
    /// a trap: every value from the file is bounds- and overflow-checked.
    @Test func damagedFilesNeverTrap() throws {
        let original = readTextBytes(try Victims.path("libnostd.so"))
        let info = try ELFFile(path: try Victims.path("libnostd.so")).dynamicInfo()
        let elf = try ELFFile(path: try Victims.path("libnostd.so"))
        // File ranges: ELF and program headers, then .dynsym … .rela.plt, then .dynamic.
        let relocationsEnd = try #require(info.pltRelocationTable.flatMap { elf.fileOffset(forVirtualAddress: $0.vaddr) }) + 48
        let dynamic = try #require(dynamicOffset(elf))
        let ranges = [0..<(64 + 9 * 56), 0x240..<Int(relocationsEnd), Int(dynamic)..<Int(dynamic + 0x140)]
        var damaged: [[UInt8]] = []
        for range in ranges {
            for i in range where i < original.count {
                var copy = original
                copy[i] = 0xff
                damaged.append(copy)
            }
            for i in stride(from: range.lowerBound & ~7, to: range.upperBound, by: 8) where i + 8 <= original.count {
                for word: UInt64 in [0, 0xffff_ffff_ffff_fff0, 0x7fff_ffff_ffff_fff8, 0x8000_0000_0000_0000, 0x1_0000_0000] {
                    var copy = original
                    for b in 0..<8 { copy[i + b] = UInt8(truncatingIfNeeded: word >> UInt64(b * 8)) }
                    damaged.append(copy)
                }
            }
        }
        var plans = 0, errors = 0
        // One file in tmpfs, rewritten for each copy (a rewrite in /tmp's disk file system costs ~3 ms here).
        var template = Array("/dev/shm/graft-test-damaged-XXXXXX".utf8CString)
        var memory = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if memory < 0 {
            template = Array("/tmp/graft-test-damaged-XXXXXX".utf8CString)
            memory = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        }
        try #require(memory >= 0)
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { close(memory); unlink(path) }
        for bytes in damaged {
            _ = ftruncate(memory, 0)
            _ = bytes.withUnsafeBytes { pwrite(memory, $0.baseAddress, $0.count, 0) }
            do {
                let file = try ELFFile(path: path)
                _ = try? file.dynamicInfo()
                let plan = try LibraryLoadPlan(file, resolve: { _ in 0x40_1000 })
                _ = plan.relocatedRegions(base: 0x7f00_0000_0000)
                plans += 1
            } catch {
                errors += 1
            }
        }
        #expect(plans + errors == damaged.count && errors > 100 && damaged.count > 2000, "\(plans) plans, \(errors) errors")
    }

    func dynamicOffset(_ elf: ELFFile) -> UInt64? {
        readTextBytes(elf.path).withUnsafeBytes { raw -> UInt64? in
            let phoff = raw.loadUnaligned(fromByteOffset: 32, as: UInt64.self), count = Int(raw.loadUnaligned(fromByteOffset: 56, as: UInt16.self))
            for i in 0..<count where raw.loadUnaligned(fromByteOffset: Int(phoff) + i * 56, as: UInt32.self) == 2 {
                return raw.loadUnaligned(fromByteOffset: Int(phoff) + i * 56 + 8, as: UInt64.self)
            }
            return nil
        }
    }

    func readTextBytes(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var bytes: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { return bytes }
            bytes += buffer[0..<n]
        }
    }

    /// ld.so's protections for shapes a linker produces: a page two segments share gets both
    /// segments' permissions; RELRO's partial last page stays writable; gaps are PROT_NONE.
    @Test func protectionsFollowLdSo() {
        func segment(_ vaddr: UInt64, _ memsz: UInt64, _ flags: String) -> LoadSegment {
            LoadSegment(vaddr: vaddr, memsz: memsz, offset: vaddr, filesz: memsz, readable: flags.contains("r"),
                        writable: flags.contains("w"), executable: flags.contains("x"))
        }
        let r = PROT_READ, w = PROT_WRITE, x = PROT_EXEC
        let shared = LibraryLoadPlan.protections([segment(0, 0x1800, "rx"), segment(0x1900, 0x2000, "rw")], relro: nil)
        #expect(shared == [.init(start: 0, end: 0x1000, protection: r | x), .init(start: 0x1000, end: 0x2000, protection: r | w | x),
                           .init(start: 0x2000, end: 0x4000, protection: r | w)])
        let gap = LibraryLoadPlan.protections([segment(0, 0x100, "r"), segment(0x3000, 0x10, "rx")], relro: nil)
        #expect(gap == [.init(start: 0, end: 0x1000, protection: r), .init(start: 0x1000, end: 0x3000, protection: PROT_NONE),
                        .init(start: 0x3000, end: 0x4000, protection: r | x)])
        let relro = LibraryLoadPlan.protections([segment(0x2e00, 0x2400, "rw")], relro: ELFRange(vaddr: 0x2e00, size: 0x1300))
        #expect(relro == [.init(start: 0x2000, end: 0x4000, protection: r), .init(start: 0x4000, end: 0x6000, protection: r | w)])
    }
}

/// Small libraries compiled for one test, in a temporary directory.
enum Sources {
    static func directory() throws -> String {
        var template = Array("/tmp/graft-test-lib-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw GraftError.systemCall(name: "mkdtemp", errno: errno, context: "/tmp")
        }
        return String(cString: made)
    }

    /// `cc -shared [-fPIC] -nostdlib -fno-stack-protector` of `text` saved as `file`; the library's path.
    static func build(_ dir: String, _ library: String, _ file: String, _ text: String, flags: [String] = [], pic: Bool = true) throws -> String {
        let source = dir + "/" + file, output = dir + "/" + library
        guard let stream = fopen(source, "w") else { throw GraftError.systemCall(name: "fopen", errno: errno, context: source) }
        fputs(text, stream)
        fclose(stream)
        let result = try runCommand("cc", ["-shared"] + (pic ? ["-fPIC"] : []) + ["-nostdlib", "-fno-stack-protector", "-o", output, source] + flags)
        guard result.status == 0 else { throw GraftError.usage("cc \(file) failed: \(result.stderr)") }
        return output
    }
}
