import Glibc
import GraftCore

/// The vDSO: the small shared object the kernel maps into every process (`[vdso]` in maps; soname
/// `linux-vdso.so.1`) with the fast `clock_gettime`, `gettimeofday`, `time`, `getcpu`. No file backs
/// it, but it is a whole ELF image in memory: graft reads it from the process (`/proc/PID/mem`, or
/// — same kernel, same image — its own) into a temporary file it opens and
/// unlinks, so the vDSO is a module like any other: symbols, `module+0xOFF`, hooks.
public enum VDSO {
    /// The path maps shows, and the name graft gives the module (its DT_SONAME, as `ldd` shows it).
    public static let mapsPath = "[vdso]"
    public static let moduleName = "linux-vdso.so.1"

    /// The image mapped at `mapping` in process `pid` (nil: this process), as an `ELFFile`.
    static func open(pid: Int32?, mapping: Mapping) throws(GraftError) -> ELFFile {
        let size = Int(mapping.end - mapping.start)
        var bytes = pid.flatMap { read(pid: $0, at: mapping.start, count: size) }
        if bytes == nil, let own = ownImage() { bytes = own }
        guard let bytes, bytes.starts(with: [0x7f, 0x45, 0x4c, 0x46]) else {
            throw GraftError.elfFormat(path: mapsPath, reason: "the vDSO's image could not be read from the process")
        }
        let directory = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(directory)/graft-vdso-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw GraftError.systemCall(name: "mkstemp", errno: errno, context: "a copy of the vDSO") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { close(fd); unlink(path) }
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw GraftError.systemCall(name: "write", errno: errno, context: path) }
        do { return try ELFFile(path: path) } catch let error as GraftError { throw error } catch {
            throw GraftError.elfFormat(path: mapsPath, reason: "\(error)")
        }
    }

    private static func read(pid: Int32, at address: UInt64, count: Int) -> [UInt8]? {
        let fd = Glibc.open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(Int64(bitPattern: address))) }
        return n == count ? buffer : nil
    }

    /// This process's vDSO (the kernel maps the same image into every process of its ABI).
    private static func ownImage() -> [UInt8]? {
        guard let maps = try? ProcMaps.read(pid: getpid()), let mine = maps.first(where: { $0.path == mapsPath }),
              let pointer = UnsafeRawPointer(bitPattern: UInt(mine.start)) else { return nil }
        return Array(UnsafeRawBufferPointer(start: pointer, count: Int(mine.end - mine.start)))
    }
}
