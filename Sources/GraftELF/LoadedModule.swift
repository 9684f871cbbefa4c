import Glibc
import GraftCore

/// One file mapped into a process (the executable, a shared library, ld.so), with the mappings of it
/// and its load bias. The ELF file is opened on first use and cached.
public final class LoadedModule: @unchecked Sendable, CustomStringConvertible {
    /// The path as `/proc/PID/maps` shows it (inside the process's mount namespace).
    public let path: String
    /// The mappings of this file, in address order.
    public let mappings: [Mapping]
    /// The file was deleted or replaced after it was mapped (`(deleted)` in maps).
    public let isDeleted: Bool
    /// Where files are opened from: `/proc/PID/root` for a live process (containers), `/` for files.
    public let root: String
    /// The process, when known: lets a deleted file be read through `/proc/PID/map_files/`.
    public let pid: Int32?

    private struct State {
        var elf: Result<ELFFile, GraftError>?
        var bias: UInt64?
    }
    private let state = Locked(State())

    public init(path: String, mappings: [Mapping], root: String = "/", pid: Int32? = nil) {
        self.path = path
        self.mappings = mappings.sorted { $0.start < $1.start }
        self.isDeleted = mappings.contains { $0.isDeleted }
        self.root = root
        self.pid = pid
    }

    /// The file name: `libc.so.6`. A memfd's (`/memfd:libfix.so`, how graft hands a library to a
    /// process in another mount namespace) is the name it was created with: `libfix.so`.
    public var name: String {
        if path == VDSO.mapsPath { return VDSO.moduleName }
        let file = basename(of: path)
        return file.hasPrefix("memfd:") && file.count > 6 ? String(file.dropFirst(6)) : file
    }

    /// Lowest mapped address of the file.
    public var start: UInt64 { mappings.first?.start ?? 0 }
    /// One past the highest mapped address of the file.
    public var end: UInt64 { mappings.map(\.end).max() ?? 0 }

    /// The module has executable code mapped (`r-x`): candidates for function lookups.
    public var hasExecutableMapping: Bool { mappings.contains { $0.executable } }

    public func contains(_ address: UInt64) -> Bool { mappings.contains { $0.contains(address) } }

    /// Runtime address minus link-time address. For the mapping with the lowest file offset, at address
    /// A and offset O: `A - (p_vaddr - p_offset + O)` of the `PT_LOAD` that holds offset O; 0 for a
    /// non-PIE executable. Needs the program headers, so the first read opens the file; when it cannot
    /// be opened, falls back to `A - O` (right for PIE and shared objects whose first segment is at 0).
    public var loadBias: UInt64 {
        if let bias = state.withLock({ $0.bias }) { return bias }
        let ordered = mappings.sorted { $0.offset == $1.offset ? $0.start < $1.start : $0.offset < $1.offset }
        var bias: UInt64 = 0
        if let first = ordered.first {
            bias = first.start &- first.offset
            if let elf = try? elf(),
               let computed = ordered.lazy.compactMap({ elf.loadBias(mappedAt: $0.start, fileOffset: $0.offset) }).first {
                bias = computed
            }
        }
        state.withLock { $0.bias = bias }
        return bias
    }

    /// The ELF file behind the module, opened once through `root` + `path` (or, for a deleted file of a
    /// live process, through `/proc/PID/map_files/START-END`). A failure is cached and rethrown.
    public func elf() throws -> ELFFile {
        try state.withLock { state throws(GraftError) -> ELFFile in
            if let result = state.elf { return try result.get() }
            let result = Result { () throws(GraftError) -> ELFFile in
                let file = try open()
                // ELFFile reads 32-bit files for `graft patch --file`; a live process graft attaches
                // to is x86_64, so a 32-bit module (an i386 process) is refused here, as before.
                guard file.is64Bit else {
                    throw GraftError.elfFormat(path: path, reason: "32-bit ELF (ELFCLASS32): graft attaches to 64-bit (x86_64) processes only; a 32-bit program file can be patched with `graft patch --file`")
                }
                return file
            }
            state.elf = result
            return try result.get()
        }
    }

    /// Runtime address of `symbol` in this process: `value + loadBias`.
    public func runtimeAddress(_ symbol: ELFSymbol) -> UInt64 { symbol.value &+ loadBias }

    /// Link-time address of runtime `address`: `address - loadBias`.
    public func linkAddress(_ runtime: UInt64) -> UInt64 { runtime &- loadBias }

    public var description: String { "\(name) at \(hex(start)) (\(path)\(isDeleted ? ", deleted" : ""))" }

    private func open() throws(GraftError) -> ELFFile {
        if path == VDSO.mapsPath, let mapping = mappings.first { return try VDSO.open(pid: pid, mapping: mapping) }
        if isDeleted {
            // The path now names another file (upgrade) or nothing; only the kernel's handle on the
            // mapped file is trustworthy. /proc/PID/map_files needs CAP_SYS_ADMIN (root).
            if let pid, let mapping = mappings.first {
                let handle = "/proc/\(pid)/map_files/\(String(mapping.start, radix: 16))-\(String(mapping.end, radix: 16))"
                do { return try ELFFileCache.open(handle) } catch {
                    throw GraftError.elfFormat(path: path, reason: "the file was deleted or replaced after it was mapped, and \(handle) cannot be read (\(error))")
                }
            }
            throw GraftError.elfFormat(path: path, reason: "the file was deleted or replaced after it was mapped; its symbols are not available")
        }
        let full = root == "/" || root.isEmpty ? path : (root.hasSuffix("/") ? String(root.dropLast()) : root) + path
        do {
            return try ELFFileCache.open(full)
        } catch let error as GraftError {
            // /proc/PID/root needs ptrace-read access to the process; without it, use the path as
            // seen from here, but only if it is the very file that is mapped (same inode).
            if full != path, case .systemCall(_, let code, _) = error, code == EACCES || code == EPERM {
                var info = stat()
                if stat(path, &info) == 0, let inode = mappings.first?.inode, UInt64(info.st_ino) == inode,
                   let file = try? ELFFileCache.open(path) {
                    return file
                }
            }
            throw error
        } catch {
            throw GraftError.elfFormat(path: full, reason: "\(error)")
        }
    }
}
