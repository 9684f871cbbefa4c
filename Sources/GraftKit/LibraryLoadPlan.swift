import Glibc
import GraftCore
import GraftELF
import GraftMachine

/// Everything `SelfContainedLoader` decides before it writes anything into a process: whether the
/// library can be loaded without a dynamic loader at all (each refusal names its reason), the span
/// to reserve, the bytes of each `PT_LOAD`, every relocation's value as "load bias + n" or "n", the
/// page protections and the initializers. Pure: built from the file and a symbol resolver, so the
/// refusals and the layout are tested on files alone.
struct LibraryLoadPlan {
    /// A word the relocations write: `value`, plus the load bias when `addsBase`.
    struct Fixup: Equatable {
        var offset: UInt64      // link time
        var addsBase: Bool
        var value: UInt64
        func word(base: UInt64) -> UInt64 { addsBase ? base &+ value : value }
    }

    /// The bytes written for one `PT_LOAD`: its file bytes (the rest of the reservation, `.bss`,
    /// is zero already).
    struct Region {
        var vaddr: UInt64
        var bytes: [UInt8]
    }

    /// Pages `[start, end)` (link time, page aligned) and their `PROT_*` bits.
    struct Protection: Equatable {
        var start: UInt64
        var end: UInt64
        var protection: Int32
    }

    static let pageSize: UInt64 = 4096
    /// More than any self-contained patch library needs; a larger span is a damaged or wrong file.
    static let maximumSpan: UInt64 = 1 << 30
    /// The relocation types a self-contained x86_64 library has (ld.so's others need TLS, IFUNC
    /// resolvers or copy relocations into an executable).
    static let supportedTypes: Set<UInt32> = [0, 1, 6, 7, 8]   // NONE, 64, GLOB_DAT, JUMP_SLOT, RELATIVE

    let path: String
    /// The lowest page of the image (link time) and the length of the whole reservation.
    let first: UInt64
    let length: UInt64
    let regions: [Region]
    let fixups: [Fixup]
    let protections: [Protection]
    /// Link-time addresses of the functions to call, in order: `DT_INIT`, then `DT_INIT_ARRAY`.
    let initializers: [UInt64]
    /// Symbols found in the target rather than in the library, and weak ones found nowhere (0).
    let targetSymbols: [String: UInt64]
    let missingWeakSymbols: [String]

    /// Checks `elf` and lays it out; throws `libraryRefused` naming the first reason it cannot be
    /// loaded without a dynamic loader, or `elfFormat` for a damaged file.
    init(_ elf: ELFFile, resolve: (String) -> UInt64?) throws {
        let path = elf.path
        func refuse(_ reason: String) -> GraftError { .libraryRefused(path: path, reason: "graft maps it itself (no dynamic loader), and \(reason)") }
        self.path = path

        guard elf.machine == 62 else {
            throw refuse("it is built for ELF machine \(elf.machine), not x86_64 (EM_X86_64 = 62)")
        }
        guard elf.fileType == 3 else {
            throw refuse("it is not a shared object (ELF type \(elf.fileType == 2 ? "ET_EXEC" : String(elf.fileType))); build it with -shared -fPIC -nostdlib")
        }
        let info = try elf.dynamicInfo()
        // A program asks for an interpreter; libc.so.6 does too (it can run), but it has a soname.
        if let interpreter = info.interpreter, info.soname == nil {
            throw refuse("it is a program (it asks for the interpreter \(interpreter)), not a library; build it with -shared -fPIC -nostdlib")
        }
        if !info.needed.isEmpty {
            throw refuse("it needs \(Self.list(info.needed)); build it with -nostdlib (and without libraries: only a dynamic loader loads what a library needs)")
        }
        if let tls = info.tls {
            throw refuse("it has thread-local storage (PT_TLS at \(tls)), which only a dynamic loader can set up for every thread; use globals instead of __thread/thread_local")
        }
        if info.hasTextRelocations {
            throw refuse("it has text relocations (DT_TEXTREL: code that must be rewritten to run); build every object with -fPIC")
        }
        if info.hasRelTable {
            throw refuse("it has DT_REL relocations (without addends), which x86_64 libraries do not use")
        }
        if info.hasRelrTable {
            throw refuse("it has packed relative relocations (DT_RELR); link it without -z pack-relative-relocs")
        }
        if let kind = info.pltRelocationKind, kind != 7 {
            throw refuse("its PLT relocations are of kind \(kind) (DT_PLTREL), not DT_RELA")
        }

        // Layout: the page-aligned span of every PT_LOAD.
        let segments = elf.loadSegments.filter { $0.memsz > 0 }
        guard !segments.isEmpty else { throw refuse("it has no PT_LOAD segment with contents") }
        var low = UInt64.max, high: UInt64 = 0
        for segment in segments {
            guard segment.filesz <= segment.memsz else {
                throw GraftError.elfFormat(path: path, reason: "the PT_LOAD at \(hex(segment.vaddr)) has p_filesz \(segment.filesz) > p_memsz \(segment.memsz)")
            }
            let (end, overflow) = segment.vaddr.addingReportingOverflow(segment.memsz)
            guard !overflow, end <= UInt64.max - Self.pageSize else {
                throw GraftError.elfFormat(path: path, reason: "the PT_LOAD at \(hex(segment.vaddr)) (\(segment.memsz) bytes) ends beyond 2^64")
            }
            low = min(low, Self.pageDown(segment.vaddr))
            high = max(high, Self.pageUp(end))
        }
        guard high - low <= Self.maximumSpan else {
            throw refuse("its PT_LOAD segments span \(high - low) bytes, more than the \(Self.maximumSpan >> 20) MiB graft maps")
        }
        first = low
        length = high - low

        // Relocations, each resolved now: a missing symbol is a refusal, not a crash later.
        var fixups: [Fixup] = []
        var targetSymbols: [String: UInt64] = [:]
        var missingWeak: Set<String> = []
        fixups.reserveCapacity(info.relocations.count)
        for relocation in info.relocations where relocation.type != 0 {
            guard Self.supportedTypes.contains(relocation.type) else {
                throw refuse("it has a \(relocation.typeName) relocation at \(hex(relocation.offset))\(relocation.symbolName.map { " (for \($0))" } ?? ""); graft applies only R_X86_64_RELATIVE, 64, GLOB_DAT and JUMP_SLOT (no TLS, IFUNC or copy relocations)")
            }
            guard segments.contains(where: { Self.holds($0, relocation.offset, 8) }) else {
                throw GraftError.elfFormat(path: path, reason: "the \(relocation.typeName) relocation at \(hex(relocation.offset)) writes outside every PT_LOAD segment")
            }
            // S + A for R_X86_64_64; S for GLOB_DAT and JUMP_SLOT (the psABI ignores their addend).
            let addend = relocation.type == 1 ? UInt64(bitPattern: relocation.addend) : 0
            if relocation.type == 8 {
                fixups.append(Fixup(offset: relocation.offset, addsBase: true, value: UInt64(bitPattern: relocation.addend)))
                continue
            }
            guard let symbol = relocation.symbol else {
                fixups.append(Fixup(offset: relocation.offset, addsBase: false, value: addend))   // S = 0
                continue
            }
            if symbol.isDefined {
                guard symbol.kind != .ifunc else {
                    throw refuse("its symbol \(symbol.name) is an IFUNC (STT_GNU_IFUNC), whose resolver a dynamic loader would call; define it as a plain function")
                }
                fixups.append(Fixup(offset: relocation.offset, addsBase: !symbol.isAbsolute, value: symbol.value &+ addend))
            } else if let address = targetSymbols[symbol.name] ?? resolve(symbol.name) {
                targetSymbols[symbol.name] = address
                fixups.append(Fixup(offset: relocation.offset, addsBase: false, value: address &+ addend))
            } else if symbol.isWeak {
                missingWeak.insert(symbol.name)   // as ld.so does: an undefined weak reference is 0
                fixups.append(Fixup(offset: relocation.offset, addsBase: false, value: addend))
            } else {
                throw refuse("it needs the symbol \(symbol.name) (\(relocation.typeName) at \(hex(relocation.offset))), which neither the library nor the target defines as a function or object (IFUNCs, such as a static glibc's memcpy, are not resolved); define it in the library, or declare it __attribute__((weak)) if it may be absent")
            }
        }
        self.fixups = fixups
        self.targetSymbols = targetSymbols
        missingWeakSymbols = missingWeak.sorted()

        // The file bytes of each segment.
        var regions: [Region] = []
        for segment in segments where segment.filesz > 0 {
            guard let bytes = elf.bytes(atVirtualAddress: segment.vaddr, count: Int(segment.filesz)) else {
                throw GraftError.elfFormat(path: path, reason: "the PT_LOAD at \(hex(segment.vaddr)) (\(segment.filesz) bytes from file offset \(hex(segment.offset))) lies beyond the end of the file")
            }
            regions.append(Region(vaddr: segment.vaddr, bytes: bytes))
        }
        self.regions = regions
        protections = Self.protections(segments, relro: info.relro)

        // Initializers: DT_INIT, then the DT_INIT_ARRAY entries as the relocations leave them.
        func isCode(_ address: UInt64) -> Bool { segments.contains { $0.executable && Self.holds($0, address, 1) } }
        var initializers: [UInt64] = []
        if let function = info.initFunction {
            guard isCode(function) else { throw refuse("its DT_INIT \(hex(function)) is not in an executable segment") }
            initializers.append(function)
        }
        if let array = info.initArray, array.size > 0 {
            guard array.size % 8 == 0, array.size <= length, segments.contains(where: { Self.holds($0, array.vaddr, array.size) }) else {
                throw GraftError.elfFormat(path: path, reason: "DT_INIT_ARRAY \(array) (DT_INIT_ARRAYSZ \(array.size)) is not a whole array inside one PT_LOAD segment")
            }
            for index in 0..<Int(array.size / 8) {
                let slot = array.vaddr + UInt64(index) * 8
                let word: Fixup
                if let fixup = fixups.last(where: { $0.offset == slot }) {
                    word = fixup
                } else {
                    word = Fixup(offset: slot, addsBase: false, value: Self.fileWord(at: slot, in: regions) ?? 0)
                }
                if !word.addsBase && (word.value == 0 || word.value == UInt64.max) { continue }   // empty slots
                guard word.addsBase, isCode(word.value) else {
                    throw refuse("its DT_INIT_ARRAY entry \(index) (at \(hex(slot))) is not relocated to a function of the library")
                }
                initializers.append(word.value)
            }
        }
        self.initializers = initializers
    }

    /// What to write for load bias `base`, in order, at runtime addresses: each region with the
    /// relocations inside it applied, then each relocated word that is not wholly inside a region
    /// (in `.bss`, or across the end of a segment's file bytes) on its own.
    func relocatedRegions(base: UInt64) -> [(address: UInt64, bytes: [UInt8])] {
        var result: [(address: UInt64, bytes: [UInt8])] = regions.map { (base &+ $0.vaddr, $0.bytes) }
        var words: [(address: UInt64, bytes: [UInt8])] = []
        for fixup in fixups {
            let word = fixup.word(base: base)
            let index = regions.firstIndex { fixup.offset >= $0.vaddr && UInt64($0.bytes.count) >= 8 && fixup.offset - $0.vaddr <= UInt64($0.bytes.count) - 8 }
            if let index {
                let at = Int(fixup.offset - regions[index].vaddr)
                for i in 0..<8 { result[index].bytes[at + i] = UInt8(truncatingIfNeeded: word >> UInt64(i * 8)) }
            } else {
                words.append((base &+ fixup.offset, (0..<8).map { UInt8(truncatingIfNeeded: word >> UInt64($0 * 8)) }))
            }
        }
        return result + words
    }

    /// The pages of the span and their protections, as ld.so leaves them: each page gets the flags
    /// of the segments on it (a page two segments share gets both), pages between segments none,
    /// and `PT_GNU_RELRO`'s whole pages lose their write permission once relocated (ld.so makes them
    /// `PROT_READ`; a RELRO page that also held code would keep its `PROT_EXEC` here).
    static func protections(_ segments: [LoadSegment], relro: ELFRange?) -> [Protection] {
        var cuts: Set<UInt64> = []
        for segment in segments {
            cuts.insert(pageDown(segment.vaddr))
            cuts.insert(pageUp(segment.vaddr + segment.memsz))
        }
        var relroPages: (start: UInt64, end: UInt64)?
        if let relro, let end = relro.end {
            let pages = (pageDown(relro.vaddr), pageDown(end))   // ld.so rounds the end down too
            if pages.0 < pages.1 { relroPages = pages; cuts.insert(pages.0); cuts.insert(pages.1) }
        }
        let sorted = cuts.sorted()
        var result: [Protection] = []
        guard let low = sorted.first, let high = segments.map({ pageUp($0.vaddr + $0.memsz) }).max() else { return [] }
        for (start, end) in zip(sorted, sorted.dropFirst()) where start >= low && end <= high {
            var protection: Int32 = PROT_NONE
            for segment in segments where pageDown(segment.vaddr) < end && pageUp(segment.vaddr + segment.memsz) > start {
                if segment.readable { protection |= PROT_READ }
                if segment.writable { protection |= PROT_WRITE }
                if segment.executable { protection |= PROT_EXEC }
            }
            if let relroPages, start >= relroPages.start, end <= relroPages.end { protection &= ~PROT_WRITE }
            if let last = result.last, last.end == start, last.protection == protection {
                result[result.count - 1].end = end
            } else {
                result.append(Protection(start: start, end: end, protection: protection))
            }
        }
        return result
    }

    /// `[address, address + count)` lies inside the segment's memory (`p_memsz`).
    static func holds(_ segment: LoadSegment, _ address: UInt64, _ count: UInt64) -> Bool {
        address >= segment.vaddr && address - segment.vaddr <= segment.memsz && segment.memsz - (address - segment.vaddr) >= count
    }

    /// The 8 bytes of the file's image at `address`, when one region holds them.
    static func fileWord(at address: UInt64, in regions: [Region]) -> UInt64? {
        for region in regions where address >= region.vaddr && address - region.vaddr <= UInt64(region.bytes.count) {
            let at = Int(address - region.vaddr)
            guard region.bytes.count - at >= 8 else { continue }
            return readLittleEndianUInt64(region.bytes, at: at)
        }
        return nil
    }

    static func pageDown(_ address: UInt64) -> UInt64 { address & ~(pageSize - 1) }
    /// Callers keep `address` at most 2^64 - pageSize (checked for every segment end).
    static func pageUp(_ address: UInt64) -> UInt64 { (address &+ (pageSize - 1)) & ~(pageSize - 1) }

    /// `a`, `a and b`, `a, b and c`.
    static func list(_ names: [String]) -> String {
        guard names.count > 1, let last = names.last else { return names.first ?? "" }
        return names.dropLast().joined(separator: ", ") + " and " + last
    }
}
