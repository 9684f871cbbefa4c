import Glibc
import GraftCore

/// Parsed ELF files shared by every `SymbolIndex` of this graft process: one command builds several
/// indexes (planning a patch twice, an inject's loader lookup, an unload), and a library binding
/// parses libc's tables once instead of each time (hundreds of milliseconds in a debug build).
/// Keyed by the file's identity as stat(2) sees it — device, inode, size, modification time — so a
/// file replaced on disk (an upgrade) is parsed afresh. At most `capacity` files are kept.
public enum ELFFileCache {
    static let capacity = 64

    private struct Key: Hashable {
        let device: UInt64, inode: UInt64, size: Int64, seconds: Int, nanoseconds: Int
    }
    private static let files = Locked([Key: ELFFile]())

    /// The parsed file at `path`, from the cache when the same file was parsed before.
    public static func open(_ path: String) throws -> ELFFile {
        var info = stat()
        guard stat(path, &info) == 0 else { return try ELFFile(path: path) }  // the error names the path
        let key = Key(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                      seconds: info.st_mtim.tv_sec, nanoseconds: info.st_mtim.tv_nsec)
        if let cached = files.withLock({ $0[key] }) { return cached }
        let file = try ELFFile(path: path)
        files.withLock { cache in
            if cache.count >= capacity { cache.removeAll() }
            cache[key] = file
        }
        return file
    }
}
