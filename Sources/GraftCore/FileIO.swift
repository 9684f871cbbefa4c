import Glibc

/// The package's one reader of whole files and symbolic links (GraftELF's maps and ELF files, ProcFS's
/// /proc texts, the journal).
public enum FileIO {
    /// Reads a whole file with read(2) until EOF. /proc files report size 0, so fstat cannot size them.
    public static func readAll(path: String) throws(GraftError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw GraftError.systemCall(name: "open", errno: errno, context: path) }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw GraftError.systemCall(name: "read", errno: errno, context: path)
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }

    /// Writes `bytes` to the existing file at `path` (opened write-only, not created or truncated:
    /// /proc/PID/fd/N of a memfd), with write(2) until done.
    public static func writeAll(_ bytes: [UInt8], to path: String) throws(GraftError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd < 0 { throw GraftError.systemCall(name: "open", errno: errno, context: path) }
        defer { close(fd) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw GraftError.systemCall(name: "write", errno: errno, context: path)
            }
            offset += n
        }
    }

    /// Replaces `path` atomically: `bytes` go to `temporary` (created or truncated, given exactly
    /// `mode` and, when set and graft may, `owner`), which is fsynced and renamed over `path`, so a
    /// reader — or a process running the old file — sees the old file or the new one, never half of
    /// one. On failure the temporary is removed; the error names the step (`open` of the temporary,
    /// `write`, `fchmod`, `fsync`, `rename`). The journal and patched program files are written so.
    public static func replace(_ path: String, with bytes: [UInt8], temporary: String, mode: mode_t = 0o600,
                               owner: (uid: uid_t, gid: gid_t)? = nil) throws(GraftError) {
        // O_NOFOLLOW: in a directory others can write (a shared journal directory), a symbolic link
        // planted at the temporary name must not redirect the write.
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd < 0 { throw GraftError.systemCall(name: "open", errno: errno, context: temporary) }
        var failed: (step: String, errno: Int32)?
        var offset = 0
        while offset < bytes.count, failed == nil {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 { if errno != EINTR { failed = ("write", errno) } } else { offset += n }
        }
        if failed == nil, let owner, geteuid() == 0 { _ = fchown(fd, owner.uid, owner.gid) }
        if failed == nil, fchmod(fd, mode & 0o7777) != 0 { failed = ("fchmod", errno) }
        if failed == nil, fsync(fd) != 0 { failed = ("fsync", errno) }
        close(fd)
        if failed == nil, rename(temporary, path) != 0 { failed = ("rename", errno) }
        if let failed {
            unlink(temporary)
            throw GraftError.systemCall(name: failed.step, errno: failed.errno, context: path)
        }
    }

    /// The whole content of a (small, virtual) file as UTF-8 text, or nil when it cannot be read.
    public static func readText(path: String) -> String? {
        guard let bytes = try? readAll(path: path) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// readlink(2) as a String, nil on any failure.
    public static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
