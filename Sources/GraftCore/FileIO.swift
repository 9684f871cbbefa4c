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
