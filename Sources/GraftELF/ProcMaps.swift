import Glibc
import GraftCore

/// One line of `/proc/PID/maps` (see proc(5)): an address range, its permissions and what backs it.
public struct Mapping: Sendable, Equatable, CustomStringConvertible {
    public let start: UInt64
    public let end: UInt64
    public let readable: Bool
    public let writable: Bool
    public let executable: Bool
    /// `p` (copy-on-write private) rather than `s` (shared).
    public let isPrivate: Bool
    public let offset: UInt64
    /// `major:minor` in hex, as the kernel prints it (`fd:01`).
    public let device: String
    public let inode: UInt64
    /// The file path, `""` for anonymous memory, or a pseudo path such as `[vdso]`, `[stack]`, `[heap]`.
    /// The kernel's ` (deleted)` suffix is removed and reported as `isDeleted`.
    public let path: String
    /// The file was unlinked (or replaced, e.g. by a package upgrade) after it was mapped: the path now
    /// names another file or nothing.
    public let isDeleted: Bool

    public init(start: UInt64, end: UInt64, readable: Bool, writable: Bool, executable: Bool, isPrivate: Bool,
                offset: UInt64, device: String, inode: UInt64, path: String, isDeleted: Bool = false) {
        self.start = start
        self.end = end
        self.readable = readable
        self.writable = writable
        self.executable = executable
        self.isPrivate = isPrivate
        self.offset = offset
        self.device = device
        self.inode = inode
        self.path = path
        self.isDeleted = isDeleted
    }

    /// Backed by a file on disk (not anonymous, not `[vdso]` and friends).
    public var isFileBacked: Bool { inode != 0 && path.hasPrefix("/") }

    /// The kernel's four-letter form: `r-xp`.
    public var permissions: String {
        (readable ? "r" : "-") + (writable ? "w" : "-") + (executable ? "x" : "-") + (isPrivate ? "p" : "s")
    }

    public var size: UInt64 { end - start }

    public func contains(_ address: UInt64) -> Bool { address >= start && address < end }

    /// `0x7f00-0x7f10 r-xp 0x28000 /usr/lib/x86_64-linux-gnu/libc.so.6`, for error messages.
    public var description: String {
        var text = "\(hex(start))-\(hex(end)) \(permissions) \(hex(offset))"
        if !path.isEmpty { text += " \(path)" }
        if isDeleted { text += " (deleted)" }
        return text
    }
}

/// Reader and parser for `/proc/PID/maps`.
public enum ProcMaps {
    /// Reads `/proc/PID/maps`. A missing process gives `noSuchProcess`; other failures `systemCall`.
    public static func read(pid: Int32) throws -> [Mapping] {
        let path = "/proc/\(pid)/maps"
        do {
            let bytes = try FileIO.readAll(path: path)
            return parse(String(decoding: bytes, as: UTF8.self))
        } catch let error {
            if case .systemCall(_, let code, _) = error, code == ENOENT || code == ESRCH {
                throw GraftError.noSuchProcess(pid: pid)
            }
            throw error
        }
    }

    /// Parses the text of a maps file. Lines that do not have the kernel's shape are skipped.
    public static func parse(_ text: String) -> [Mapping] {
        var result: [Mapping] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if let mapping = parseLine(Substring(line)) { result.append(mapping) }
        }
        return result
    }

    /// `start-end perms offset dev inode [padding path]`. The path is everything after the spaces that
    /// follow the inode, so paths containing spaces survive.
    static func parseLine(_ line: Substring) -> Mapping? {
        var rest = line[...]
        func field() -> Substring? {
            let trimmed = rest.drop(while: { $0 == " " || $0 == "\t" })
            guard !trimmed.isEmpty else { return nil }
            let end = trimmed.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? trimmed.endIndex
            let value = trimmed[trimmed.startIndex..<end]
            rest = trimmed[end...]
            return value
        }
        guard let range = field(), let perms = field(), let offsetText = field(),
              let device = field(), let inodeText = field() else { return nil }
        let bounds = range.split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count == 2, let start = UInt64(bounds[0], radix: 16), let end = UInt64(bounds[1], radix: 16),
              start <= end else { return nil }
        let p = Array(perms.utf8)
        guard p.count == 4,
              p[0] == UInt8(ascii: "r") || p[0] == UInt8(ascii: "-"),
              p[1] == UInt8(ascii: "w") || p[1] == UInt8(ascii: "-"),
              p[2] == UInt8(ascii: "x") || p[2] == UInt8(ascii: "-"),
              p[3] == UInt8(ascii: "p") || p[3] == UInt8(ascii: "s") else { return nil }
        guard let offset = UInt64(offsetText, radix: 16), let inode = UInt64(inodeText),
              device.contains(":") else { return nil }
        var path = String(rest.drop(while: { $0 == " " || $0 == "\t" }))
        if path.hasSuffix("\r") { path.removeLast() }
        var deleted = false
        if path.hasSuffix(" (deleted)") {
            deleted = true
            path.removeLast(" (deleted)".count)
        }
        return Mapping(start: start, end: end,
                       readable: p[0] == UInt8(ascii: "r"), writable: p[1] == UInt8(ascii: "w"),
                       executable: p[2] == UInt8(ascii: "x"), isPrivate: p[3] == UInt8(ascii: "p"),
                       offset: offset, device: String(device), inode: inode, path: path, isDeleted: deleted)
    }
}
