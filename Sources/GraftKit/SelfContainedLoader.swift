import Glibc
import GraftCore
import GraftELF
import GraftPtrace

/// A self-contained library that graft mapped into a process itself (`SelfContainedLoader.map`):
/// where it is, its pages' protections and the initializers that ran. Codable, for a journal.
public struct MappedLibrary: Codable, Sendable, Equatable {
    /// Pages of the library with one protection.
    public struct Segment: Codable, Sendable, Equatable {
        public var start: UInt64
        public var length: UInt64
        /// `PROT_READ` | `PROT_WRITE` | `PROT_EXEC` bits (`PROT_NONE` for gaps between segments).
        public var protection: Int32

        /// As `/proc/PID/maps` shows it, without the private/shared letter: `r-x`.
        public var permissions: String {
            (protection & PROT_READ != 0 ? "r" : "-") + (protection & PROT_WRITE != 0 ? "w" : "-")
                + (protection & PROT_EXEC != 0 ? "x" : "-")
        }
    }

    /// The file as given to `map`.
    public var path: String
    public var buildID: String?
    /// The load bias: a runtime address is the link-time address (a symbol's `st_value`) plus `base`.
    public var base: UInt64
    /// The one anonymous mapping the library occupies: `[start, start + length)`.
    public var start: UInt64
    public var length: UInt64
    public var segments: [Segment]
    /// Runtime addresses of the initializers called (`DT_INIT`, then `DT_INIT_ARRAY`), in order;
    /// empty when `map` was told not to run them.
    public var initializers: [UInt64]

    public var end: UInt64 { start &+ length }

    /// The runtime address of the library's defined symbol `name` (a function or an object), nil if
    /// it has none. `elf` is the file that was mapped.
    public func address(of name: String, in elf: ELFFile) -> UInt64? {
        let symbols = elf.definedSymbols(named: name)
        return (symbols.first { $0.isGlobal } ?? symbols.first).map { base &+ $0.value }
    }
}

/// Loads a self-contained shared library into a process that has no dynamic loader to `dlopen` it
/// with: a static C program, a Go program, a musl static binary (frida refuses these). "Self-
/// contained" means built `-shared -fPIC -nostdlib`: no `DT_NEEDED`, no TLS, no text relocations,
/// only RELATIVE, 64, GLOB_DAT and JUMP_SLOT relocations, every symbol it needs defined in itself or
/// in the target (the target's symbol tables stand in for a loader's global scope).
///
/// Like ld.so's `_dl_map_object` + `_dl_relocate_object` + `call_init`, done from outside with the
/// target stopped: one remote `mmap` reserves the whole span (anonymous, read-write), each
/// `PT_LOAD`'s bytes are written with the relocations already applied (eager binding: PLT slots
/// point at their functions, nothing is resolved lazily), then `mprotect` gives each page its
/// segment's protection (RELRO read-only), and the initializers are called with `remoteCall`.
public enum SelfContainedLoader {
    /// Every check `map` makes before writing anything, on the file alone: not ELF64/x86_64/ET_DYN,
    /// a program (PT_INTERP), `DT_NEEDED` (named: "needs libc.so.6; build it with -nostdlib"),
    /// `PT_TLS`, `DT_TEXTREL`, DT_REL/DT_RELR tables, a relocation type other than
    /// R_X86_64_NONE/64/GLOB_DAT/JUMP_SLOT/RELATIVE (named), an IFUNC, a symbol a relocation needs
    /// that neither the library defines nor `resolve` finds (named; an undefined *weak* symbol is
    /// 0, as with ld.so), initializers outside the library's code. Throws `libraryRefused`, or
    /// `elfFormat` for a damaged file.
    public static func check(_ elf: ELFFile, resolve: (String) -> UInt64?) throws {
        _ = try LibraryLoadPlan(elf, resolve: resolve)
    }

    /// Maps `elf` into the stopped process `tracee` and returns where it is.
    ///
    /// `resolve(name)` gives the runtime address of a target symbol the library refers to (see
    /// `targetResolver`); the library's own symbols come first. With `runInitializers`, `DT_INIT`
    /// and each `DT_INIT_ARRAY` entry are called on `thread` (default: `threadForRemoteCall`) with
    /// arguments (0, NULL, NULL) where ld.so passes (argc, argv, envp), each bounded by
    /// `remoteCall`'s timeout. Do not run them in a Go program: its threads are not C threads.
    ///
    /// The refusals of `check` come first and write nothing. A failure after the reservation (a
    /// write, an `mprotect`, an initializer that faults or hangs) unmaps the reservation again and
    /// rethrows: either the library is mapped and initialized, or the process is as it was (except
    /// for what a failed initializer did).
    public static func map(_ elf: ELFFile, into tracee: Tracee, resolve: (String) -> UInt64?,
                           runInitializers: Bool, thread: Int32? = nil) throws -> MappedLibrary {
        let plan = try LibraryLoadPlan(elf, resolve: resolve)
        let start = try tracee.remoteSyscall(9, [0, plan.length, UInt64(PROT_READ | PROT_WRITE),
                                                 UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0],
                                             name: "mmap", on: thread)
        let base = start &- plan.first
        var library = MappedLibrary(path: elf.path, buildID: elf.buildID, base: base, start: start, length: plan.length,
                                    segments: plan.protections.map {
                                        .init(start: base &+ $0.start, length: $0.end - $0.start, protection: $0.protection)
                                    },
                                    initializers: [])
        do {
            for region in plan.relocatedRegions(base: base) {
                try tracee.writeMemory(at: region.address, bytes: region.bytes)
            }
            for segment in library.segments {
                _ = try tracee.remoteSyscall(10, [segment.start, segment.length, UInt64(segment.protection)],
                                             name: "mprotect", on: thread)
            }
            if runInitializers {
                let name = basenameOf(elf.path)
                for (index, function) in plan.initializers.enumerated() {
                    let address = base &+ function
                    _ = try tracee.remoteCall(address, [0, 0, 0], name: "\(name)'s initializer \(index + 1) at \(hex(address))", on: thread)
                    library.initializers.append(address)
                }
            }
        } catch {
            _ = try? tracee.remoteSyscall(11, [start, plan.length], name: "munmap", on: thread)
            throw error
        }
        return library
    }

    /// Unmaps a library `map` mapped, after checking that its range still holds only anonymous
    /// memory (a range something else has reused since is left alone). The caller makes sure no
    /// code still jumps into it (patches reverted first).
    public static func unmap(_ library: MappedLibrary, tracee: Tracee, thread: Int32? = nil) throws {
        let mappings = try ProcMaps.read(pid: tracee.pid)
        var covered = library.start
        for mapping in mappings where mapping.end > library.start && mapping.start < library.end {
            if mapping.start > covered { throw GraftError.addressNotMapped(address: covered) }
            guard mapping.path.isEmpty, mapping.inode == 0 else {
                throw GraftError.usage("\(library.path) is no longer mapped at \(hex(library.start))..<\(hex(library.end)): \(mapping) lies there now; nothing was unmapped")
            }
            covered = max(covered, mapping.end)
        }
        if covered < library.end { throw GraftError.addressNotMapped(address: covered) }
        _ = try tracee.remoteSyscall(11, [library.start, library.length], name: "munmap", on: thread)
    }

    /// A resolver for `map` and `check` over a process's symbols: the first module (the executable
    /// first, then in map order) whose `.dynsym` or `.symtab` defines `name` as a global function
    /// or object gives its runtime address (`value + loadBias`). Unreadable modules are skipped;
    /// IFUNCs are not resolved (their value is a resolver, not the function), so a library that
    /// needs one is refused by name.
    public static func targetResolver(index: SymbolIndex) -> (String) -> UInt64? {
        { name in
            for module in index.modules {
                guard let elf = try? module.elf() else { continue }
                let symbols = elf.definedSymbols(named: name).filter {
                    $0.isGlobal && $0.value != 0 && ($0.kind == .function || $0.kind == .object)
                }
                if let symbol = symbols.first { return module.runtimeAddress(symbol) }
            }
            return nil
        }
    }

    private static func basenameOf(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}
