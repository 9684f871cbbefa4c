import CLibdw
import GraftCore
import Glibc

/// Where a file's DWARF is: in the file itself (built with -g), or in a separate debug file as gdb
/// looks for one (Debian's -dbgsym packages, `objcopy --only-keep-debug`):
///   1. `DEBUGDIR/.build-id/xx/yyyy….debug`, from the file's NT_GNU_BUILD_ID;
///   2. `.gnu_debuglink`'s name next to the file, in its `.debug/` folder, and under
///      `DEBUGDIR/<the file's folder>/`.
/// DEBUGDIR is `$GRAFT_DEBUG_DIR` (folders separated by `:`), else `/usr/lib/debug`.
public enum DebugInfo {
    /// The folders searched for separate debug files.
    public static var directories: [String] {
        if let value = getenv("GRAFT_DEBUG_DIR").map({ String(cString: $0) }), !value.isEmpty {
            return value.split(separator: ":").map(String.init)
        }
        return ["/usr/lib/debug"]
    }

    private static let readers = Locked([String: [DWARFReader]]())

    /// The signature of the function whose entry is `linkAddress` in the ELF file at `path`
    /// (opened as given: `/proc/PID/root/…` for a live process), from the first DWARF that has it.
    public static func signature(file path: String, buildID: String?, linkAddress: UInt64) -> FunctionSignature? {
        for reader in self.readers(for: path, buildID: buildID) {
            if let found = reader.signature(at: linkAddress) { return found }
        }
        return nil
    }

    /// The DWARF readers for a file: its own, then its separate debug file. Cached per path.
    public static func readers(for path: String, buildID: String?) -> [DWARFReader] {
        if let cached = readers.withLock({ $0[path] }) { return cached }
        var found: [DWARFReader] = []
        if let own = DWARFReader(path: path) { found.append(own) }
        if let separate = separateDebugFile(for: path, buildID: buildID), let reader = DWARFReader(path: separate) {
            found.append(reader)
        }
        readers.withLock { $0[path] = found }
        return found
    }

    /// The separate debug file of `path`, if one is installed.
    public static func separateDebugFile(for path: String, buildID: String?, directories: [String] = DebugInfo.directories) -> String? {
        if let buildID, buildID.count > 2 {
            let id = buildID.lowercased()
            for directory in directories {
                let candidate = "\(directory)/.build-id/\(id.prefix(2))/\(id.dropFirst(2)).debug"
                if access(candidate, R_OK) == 0 { return candidate }
            }
        }
        guard let link = debugLink(of: path) else { return nil }
        let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        // The folder as the process sees it: /proc/PID/root/usr/bin -> /usr/bin under DEBUGDIR.
        var seen = folder
        let parts = seen.split(separator: "/", omittingEmptySubsequences: true)
        if parts.count >= 3, parts[0] == "proc", parts[2] == "root" { seen = "/" + parts.dropFirst(3).joined(separator: "/") }
        var candidates = ["\(folder)/\(link)", "\(folder)/.debug/\(link)"]
        candidates += directories.map { "\($0)\(seen)/\(link)" }
        return candidates.first { $0 != path && access($0, R_OK) == 0 }
    }

    /// The file name in `.gnu_debuglink` (libdw's `dwelf_elf_gnu_debuglink`).
    public static func debugLink(of path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        _ = elf_version(UInt32(EV_CURRENT))
        guard let elf = elf_begin(fd, ELF_C_READ_MMAP, nil) else { return nil }
        defer { elf_end(elf) }
        var crc: GElf_Word = 0
        guard let name = dwelf_elf_gnu_debuglink(elf, &crc) else { return nil }
        let text = String(cString: name)
        return text.isEmpty || text.contains("/") ? nil : text
    }
}
