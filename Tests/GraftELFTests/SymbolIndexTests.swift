import Glibc
import Testing
import GraftCore
@testable import GraftELF

@Suite struct SymbolIndexLiveTests {
    let getpidAddress = UInt64(UInt(bitPattern: dlsym(nil, "getpid")!))

    @Test func resolvesGetpidEveryWay() throws {
        let index = try SymbolIndex(pid: getpid())
        for text in ["libc:getpid", "libc.so.6:getpid", "getpid", "\(libcPath):getpid", hex(getpidAddress)] {
            let resolved = try index.resolve(Location.parse(text))
            #expect(resolved.address == getpidAddress, "\(text)")
            #expect(resolved.symbol?.name == "getpid", "\(text)")
            #expect(resolved.symbolAddress == getpidAddress)
            #expect(resolved.offset == 0)
            #expect(resolved.module?.path == libcPath)
            #expect(resolved.description == "libc.so.6!getpid")
        }
        let plus4 = try index.resolve(Location.parse("getpid+4"))
        #expect(plus4.address == getpidAddress + 4)
        #expect(plus4.offset == 4)
        #expect(plus4.description == "libc.so.6!getpid+0x4")
        let back = try index.resolve(Location.parse(hex(getpidAddress + 4)))
        #expect(back.symbol == plus4.symbol && back.offset == 4 && back.description == "libc.so.6!getpid+0x4")
        let viaOffset = try index.resolve(Location.parse(hex(getpidAddress) + "+4"))
        #expect(viaOffset.address == getpidAddress + 4 && viaOffset.description == "libc.so.6!getpid+0x4")
        let libc = try index.module(named: "libc")
        #expect(libc.name == "libc.so.6")
        #expect(libc.runtimeAddress(try #require(plus4.symbol)) == getpidAddress)
        #expect(libc.linkAddress(getpidAddress) == plus4.symbol?.value)
        #expect(libc.loadBias == libc.mappings[0].start)   // libc's first PT_LOAD is at vaddr 0, offset 0
    }

    @Test func otherFunctionsMatchDlsym() throws {
        let index = try SymbolIndex(pid: getpid())
        for name in ["write", "malloc", "_dl_catch_error", "dlsym", "pthread_create"] {
            let address = UInt64(UInt(bitPattern: try #require(dlsym(nil, name))))
            let symbolized = try #require(index.symbolize(address))
            #expect(symbolized.address == address)
            #expect(symbolized.offset == 0, "\(name) -> \(symbolized)")
            #expect(symbolized.symbol?.name == name)
            if name != "_dl_catch_error" { #expect(try index.resolve(Location.parse(name)).address == address) }
        }
        // strlen is an IFUNC: dlsym gives the implementation ld.so chose (__strlen_avx2 or similar, a
        // local symbol absent from the stripped libc), the symbol table gives the resolver.
        let strlenImplementation = UInt64(UInt(bitPattern: try #require(dlsym(nil, "strlen"))))
        let strlenSymbol = try index.resolve(Location.parse("strlen"))
        #expect(strlenSymbol.symbol?.kind == .ifunc)
        #expect(strlenSymbol.address != strlenImplementation)
        #expect(index.symbolize(strlenImplementation)?.module?.name == "libc.so.6")
        let write = UInt64(UInt(bitPattern: dlsym(nil, "write")!))
        #expect(index.symbolize(write)?.description == "libc.so.6!write")
        #expect(try index.resolve(Location.parse("libc:write")).address == write)
    }

    @Test func suggestionsForTypos() throws {
        let index = try SymbolIndex(pid: getpid())
        let error = graftError { _ = try index.resolve(Location.parse("getpdi")) }
        guard case .symbolNotFound(let name, let module, let suggestions)? = error else {
            Issue.record("expected symbolNotFound, got \(String(describing: error))"); return
        }
        #expect(name == "getpdi" && module == nil)
        #expect(suggestions.first == "getpid")
        #expect(suggestions.count <= 5)
        let inLibc = graftError { _ = try index.resolve(Location.parse("libc:GETPID")) }
        guard case .symbolNotFoundStripped("GETPID", "libc.so.6", let libcSuggestions)? = inLibc else {
            Issue.record("got \(String(describing: inLibc))"); return
        }
        #expect(libcSuggestions.first == "getpid")
    }

    @Test func ambiguousAcrossModules() throws {
        // Both libc and ld.so define _dl_catch_error (at different addresses); confirm with nm.
        for path in [libcPath, ldPath] {
            #expect(run("nm -D --defined-only \(path)").contains(" T _dl_catch_error@@GLIBC_PRIVATE"))
        }
        let index = try SymbolIndex(pid: getpid())
        let order = index.modules.map(\.name).filter { $0 == "libc.so.6" || $0 == "ld-linux-x86-64.so.2" }
        #expect(order.count == 2)
        #expect(graftError { _ = try index.resolve(Location.parse("_dl_catch_error")) }
                == .ambiguousSymbol(name: "_dl_catch_error", candidates: order.map { "\($0):_dl_catch_error" }))
        let inLd = try index.resolve(Location.parse("ld-linux:_dl_catch_error"))
        #expect(inLd.module?.name == "ld-linux-x86-64.so.2" && inLd.symbol?.name == "_dl_catch_error")
    }

    @Test func deletedLibraryIsReadThroughMapFiles() throws {
        // A library deleted after loading (as after a package upgrade): the path is gone, the symbols
        // come from /proc/self/map_files (root only, which these tests run as).
        let dir = makeTempDirectory()
        writeFile(dir + "/del.c", Array("int graft_deleted_fn(int x) { return x * 7 + 3; }\n".utf8))
        _ = run("cc -shared -fPIC -O1 -o \(dir)/libgraftdel.so.1 \(dir)/del.c")
        let handle = try #require(dlopen(dir + "/libgraftdel.so.1", RTLD_NOW | RTLD_LOCAL))
        defer { dlclose(handle) }
        let expected = UInt64(UInt(bitPattern: dlsym(handle, "graft_deleted_fn")))
        #expect(expected != 0)
        #expect(unlink(dir + "/libgraftdel.so.1") == 0)
        let index = try SymbolIndex(pid: getpid())
        let module = try index.module(named: "libgraftdel")
        #expect(module.isDeleted)
        #expect(module.path == dir + "/libgraftdel.so.1")
        let resolved = try index.resolve(Location.parse("libgraftdel:graft_deleted_fn"))
        #expect(resolved.address == expected)
        #expect(try index.resolve(Location.parse("graft_deleted_fn")).address == expected)
        #expect(index.symbolize(expected + 1)?.description == "libgraftdel.so.1!graft_deleted_fn+0x1")
        // Through a plain file root there is no process to ask: a clear error instead.
        let offline = SymbolIndex(mappings: index.mappings)
        #expect(graftError { _ = try offline.resolve(Location.parse("libgraftdel:graft_deleted_fn")) }
                == .elfFormat(path: dir + "/libgraftdel.so.1", reason: "the file was deleted or replaced after it was mapped; its symbols are not available"))
    }

    @Test func modulesAndErrors() throws {
        let index = try SymbolIndex(pid: getpid())
        #expect(index.modules.first?.path == FileIO.readLink("/proc/self/exe"))
        #expect(Set(index.modules.map(\.path)).count == index.modules.count)
        #expect(index.modules.filter { $0.path != VDSO.mapsPath }.allSatisfy { $0.mappings.allSatisfy(\.isFileBacked) })
        #expect(index.module(containing: getpidAddress)?.name == "libc.so.6")
        #expect(index.mapping(containing: getpidAddress)?.executable == true)
        #expect(index.module(containing: 0) == nil)
        #expect(index.symbolize(0) == nil)
        let unmapped = try index.resolve(Location.parse("0x10"))
        #expect(unmapped.module == nil && unmapped.symbol == nil && unmapped.description == "0x10")
        guard case .moduleNotFound("libnothere", let available)? = graftError({ _ = try index.module(named: "libnothere") }) else {
            Issue.record("expected moduleNotFound"); return
        }
        #expect(available.contains("libc.so.6"))
        guard case .symbolNotFoundStripped("graft_no_such_function", "libc.so.6", _)? =
                graftError({ _ = try index.resolve(Location.parse("libc:graft_no_such_function")) }) else {
            Issue.record("expected symbolNotFound in libc"); return
        }
    }
}

@Suite struct SymbolIndexFileTests {
    static let libcBase: UInt64 = 0x7f12_3450_0000
    static let ldBase: UInt64 = 0x7f12_3480_0000
    static let capstoneBase: UInt64 = 0x7f10_0000_0000

    /// A maps text for a made-up process: /usr/bin/cc (non-PIE), libcapstone, a symlink-named copy,
    /// libc, ld.so, a deleted and a missing library, and pseudo mappings.
    static var text: String {
        mapsText(for: "/usr/bin/cc", base: 0)
        + "01000000-01021000 rw-p 00000000 00:00 0                                  [heap]\n"
        + mapsText(for: capstonePath, base: capstoneBase, inode: 77)
        + mapsText(for: "/usr/lib/x86_64-linux-gnu/libcapstone.so", base: capstoneBase + 0x100_0000, inode: 78)
        + mapsText(for: libcPath, base: libcBase, inode: 99)
        + "7f1234700000-7f1234701000 r-xp 00001000 08:02 55                         /nonexistent/libgone.so.1 (deleted)\n"
        + "7f1234710000-7f1234711000 r-xp 00001000 08:02 56                         /nonexistent/libmissing.so.2\n"
        + mapsText(for: ldPath, base: ldBase, inode: 100)
        + "7ffd5e5b4000-7ffd5e5b6000 r-xp 00000000 00:00 0                          [vdso]\n"
    }

    func index() -> SymbolIndex { SymbolIndex(mappings: ProcMaps.parse(Self.text)) }

    func readelfValue(_ path: String, _ versionedName: String) throws -> ReadelfSymbol {
        try #require(readelfFunctions(path).first { $0.name == versionedName })
    }

    @Test func modulePrefixRules() throws {
        let index = index()
        #expect(index.modules.map(\.name) == ["cc", "libcapstone.so.4", "libcapstone.so", "libc.so.6",
                                               "libgone.so.1", "libmissing.so.2", "ld-linux-x86-64.so.2", "linux-vdso.so.1"])
        #expect(try index.module(named: "libc").name == "libc.so.6")
        #expect(try index.module(named: "libc.so.6").name == "libc.so.6")
        #expect(try index.module(named: libcPath).name == "libc.so.6")
        #expect(try index.module(named: "libcapstone.so").name == "libcapstone.so")   // exact beats prefix
        #expect(try index.module(named: "libcapstone.so.4").name == "libcapstone.so.4")
        #expect(try index.module(named: "ld-linux").name == "ld-linux-x86-64.so.2")
        #expect(try index.module(named: "ld").name == "ld-linux-x86-64.so.2")
        #expect(try index.module(named: "cc").path == "/usr/bin/cc")
        #expect(graftError { _ = try index.module(named: "libcapstone") }
                == .ambiguousModule(name: "libcapstone", candidates: ["libcapstone.so.4", "libcapstone.so"]))
        let available = ["cc", "libcapstone.so.4", "libcapstone.so", "libc.so.6", "libgone.so.1", "libmissing.so.2", "ld-linux-x86-64.so.2",
                         "linux-vdso.so.1"]
        #expect(graftError { _ = try index.module(named: "lib") } == .moduleNotFound(name: "lib", available: available))
        #expect(graftError { _ = try index.module(named: "libcap") } == .moduleNotFound(name: "libcap", available: available))
        #expect(try index.module(named: "libc.so").name == "libc.so.6")
        // A versioned soname: a digit after the prefix (`libpython` -> `libpython3.11.so.1.0`).
        #expect(try index.module(named: "libmissing.so.").name == "libmissing.so.2")
    }

    @Test func loadBiasAndResolution() throws {
        let index = index()
        let libc = try index.module(named: "libc")
        #expect(libc.loadBias == Self.libcBase)
        #expect(try index.module(named: "cc").loadBias == 0)
        #expect(try index.module(named: "ld").loadBias == Self.ldBase)
        let getpid = try readelfValue(libcPath, "getpid@@GLIBC_2.2.5")
        let resolved = try index.resolve(Location.parse("libc:getpid+2"))
        #expect(resolved.address == Self.libcBase + getpid.value + 2)
        #expect(resolved.symbolAddress == Self.libcBase + getpid.value)
        #expect(resolved.description == "libc.so.6!getpid+0x2")
        #expect(try index.resolve(Location.parse("getpid")).address == Self.libcBase + getpid.value)
        #expect(index.symbolize(Self.libcBase + getpid.value + 7)?.description == "libc.so.6!getpid+0x7")
        // A non-PIE function: runtime = link address.
        let obstack = try readelfValue("/usr/bin/cc", "_obstack_free")
        #expect(try index.resolve(Location.parse("cc:_obstack_free")).address == obstack.value)
        #expect(index.symbolize(obstack.value + 1)?.description == "cc!_obstack_free+0x1")
        let inLd = try readelfValue(ldPath, "_dl_catch_error@@GLIBC_PRIVATE")
        let inLibc = try readelfValue(libcPath, "_dl_catch_error@@GLIBC_PRIVATE")
        #expect(graftError { _ = try index.resolve(Location.parse("_dl_catch_error")) }
                == .ambiguousSymbol(name: "_dl_catch_error", candidates: ["libc.so.6:_dl_catch_error", "ld-linux-x86-64.so.2:_dl_catch_error"]))
        #expect(try index.resolve(Location.parse("ld-linux-x86-64.so.2:_dl_catch_error")).address == Self.ldBase + inLd.value)
        #expect(try index.resolve(Location.parse("libc:_dl_catch_error")).address == Self.libcBase + inLibc.value)
        // In the module, outside any function symbol.
        let libcStart = libc.mappings[0].start
        #expect(index.symbolize(libcStart)?.description == "libc.so.6+0x0")
        // [vdso] is no file, but a module (its image read from memory: `VDSO`).
        #expect(index.symbolize(0x7ffd5e5b4000)?.module?.name == "linux-vdso.so.1")
    }

    @Test func biasWithoutTheFirstSegment() throws {
        // Only the r-x mapping (file offset != 0) is given: p_vaddr - p_offset + O still yields the bias.
        let text = mapsText(for: libcPath, base: Self.libcBase) { $0 == 1 }
        let mappings = ProcMaps.parse(text)
        #expect(mappings.count == 1 && mappings[0].offset != 0 && mappings[0].executable)
        let index = SymbolIndex(mappings: mappings)
        #expect(index.modules.first?.loadBias == Self.libcBase)
        let getpid = try readelfValue(libcPath, "getpid@@GLIBC_2.2.5")
        #expect(try index.resolve(Location.parse("getpid")).address == Self.libcBase + getpid.value)
        // The RW segment's file offset is not page aligned: its mapping starts below p_offset.
        let rwOnly = SymbolIndex(mappings: ProcMaps.parse(mapsText(for: libcPath, base: Self.libcBase) { $0 == 3 }))
        #expect(rwOnly.modules.first?.mappings.first?.writable == true)
        #expect(rwOnly.modules.first?.loadBias == Self.libcBase)
    }

    @Test func strayMappingsOfALoadedFile() throws {
        // A program that mmaps its own libc (as ELFFile does) adds r--p mappings at offset 0 of the
        // same file: they must not move the load bias or claim addresses.
        let image = mapsText(for: libcPath, base: Self.libcBase, inode: 99)
        let below = "7f1234400000-7f1234420000 r--p 00000000 fd:01 99                         \(libcPath)\n"
        let above = "7f1234900000-7f1234920000 r--p 00000000 fd:01 99                         \(libcPath)\n"
        let index = SymbolIndex(mappings: ProcMaps.parse(below + image + above))
        #expect(index.mappings.count == image.split(separator: "\n").count + 2)
        #expect(index.modules.count == 1)
        let libc = try #require(index.modules.first)
        #expect(libc.mappings == ProcMaps.parse(image))
        #expect(libc.loadBias == Self.libcBase)
        #expect(index.module(containing: 0x7f1234400010) == nil)
        #expect(index.module(containing: 0x7f1234900010) == nil)
        let getpid = try readelfValue(libcPath, "getpid@@GLIBC_2.2.5")
        #expect(try index.resolve(Location.parse("libc:getpid")).address == Self.libcBase + getpid.value)
        // A data file mapped twice stays one module.
        let data = "7f0000000000-7f0000001000 r--p 00000000 fd:01 7 /usr/lib/locale/C.utf8/LC_CTYPE\n"
            + "7f0000100000-7f0000101000 r--p 00000000 fd:01 7 /usr/lib/locale/C.utf8/LC_CTYPE\n"
        let dataIndex = SymbolIndex(mappings: ProcMaps.parse(data))
        #expect(dataIndex.modules.count == 1 && dataIndex.modules[0].mappings.count == 2)
        #expect(!dataIndex.modules[0].hasExecutableMapping)
    }

    @Test func unreadableModules() throws {
        let index = index()
        #expect(graftError { _ = try index.resolve(Location.parse("libgone:foo")) }
                == .elfFormat(path: "/nonexistent/libgone.so.1", reason: "the file was deleted or replaced after it was mapped; its symbols are not available"))
        #expect(graftError { _ = try index.resolve(Location.parse("libmissing:foo")) }
                == .systemCall(name: "open", errno: ENOENT, context: "/nonexistent/libmissing.so.2"))
        // Bare names skip them.
        #expect(try index.resolve(Location.parse("getpid")).module?.name == "libc.so.6")
        let gone = try index.module(named: "libgone")
        #expect(gone.isDeleted)
        #expect(index.symbolize(0x7f1234700010)?.description == "libgone.so.1+0x10")
    }

    @Test func fileLocalDuplicatesAreAmbiguousWithAddresses() throws {
        let path = CompiledSample.paths.pie
        let base: UInt64 = 0x5555_5555_4000
        let index = SymbolIndex(mappings: ProcMaps.parse(mapsText(for: path, base: base)))
        let helpers = try ELFFile(path: path).symbols(named: "helper").map(\.value).sorted()
        #expect(helpers.count == 2)
        #expect(graftError { _ = try index.resolve(Location.parse("victim-pie:helper")) }
                == .ambiguousSymbol(name: "helper", candidates: helpers.map { "\(hex(base + $0)) (victim-pie:helper, file-local)" }))
        let twice = try index.resolve(Location.parse("graft_twice"))
        #expect(twice.description == "victim-pie!graft_twice")
        #expect(index.symbolize(base + helpers[1])?.description == "victim-pie!helper")
    }

    @Test func functionsMatchingGlob() throws {
        let index = SymbolIndex(mappings: ProcMaps.parse(mapsText(for: libcPath, base: Self.libcBase)))
        let found = try index.functions(matching: "getp*id")
        let expected = readelfFunctions(libcPath).filter { fnmatch("getp*id", $0.bareName, 0) == 0 }
        #expect(!expected.isEmpty)
        #expect(found.map { $0.symbol!.name }.sorted() == expected.map(\.bareName).sorted())
        #expect(found.map(\.address).sorted() == expected.map { Self.libcBase + $0.value }.sorted())
        #expect(zip(found, found.dropFirst()).allSatisfy { $0.address <= $1.address })
        #expect(found.allSatisfy { $0.offset == 0 && $0.module?.name == "libc.so.6" })
        #expect(try index.functions(matching: nil).count == (try ELFFile(path: libcPath)).functionSymbols.count)
        // MODULE:GLOB looks in that module only (prefix rules of LOCATION); `MODULE:` is all of it.
        #expect(try index.functions(matching: "libc:getp*id").map(\.address) == found.map(\.address))
        #expect(try index.functions(matching: "libc.so.6:").count == (try ELFFile(path: libcPath)).functionSymbols.count)
        #expect(throws: GraftError.self) { try index.functions(matching: "nosuchlib:getp*id") }
        // `::` is part of a C++ name, not a module separator.
        #expect(try index.functions(matching: "ns::f*").isEmpty)
    }
}
