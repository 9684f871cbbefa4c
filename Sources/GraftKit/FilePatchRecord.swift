import FoundationEssentials
import GraftCore
import GraftPtrace
import Glibc

/// One patch graft made in a program file, as its side file records it.
public struct FilePatchEntry: Codable, Sendable, Equatable {
    public let id: Int
    public let function: String
    /// Link-time address of the new bytes (`0x…`).
    public let address: String
    /// Where they are in the file (`0x…`).
    public let fileOffset: String
    public let instructionSet: InstructionSet
    /// `jump` or `return`.
    public let kind: String
    public var target: String?
    public var targetAddress: String?
    public var returnValue: Int64?
    public let encoding: String
    /// Hex, as in the journal.
    public let originalBytes: String
    public let newBytes: String
    /// UTC, ISO 8601.
    public let appliedAt: String

    public var original: [UInt8] { bytes(fromHex: originalBytes) ?? [] }
    public var new: [UInt8] { bytes(fromHex: newBytes) ?? [] }
    public var offsetValue: UInt64 { hexValue(fileOffset) ?? 0 }
    public var addressValue: UInt64 { hexValue(address) ?? 0 }
}

/// The side file `FILE.graft.json` next to a patched file: what graft changed in it, enough to put
/// every byte back (`graft unpatch --file FILE`). Written atomically (temporary file, fsync, rename).
public struct FilePatchRecord: Codable, Sendable, Equatable {
    /// The patched file (an absolute path).
    public var file: String
    /// The file the first patch was made from (the pristine bytes; an absolute path), and its build-id.
    public var source: String
    public var sourceBuildID: String?
    public var nextID: Int
    public var patches: [FilePatchEntry]

    /// `FILE.graft.json`.
    public static func sidePath(for file: String) -> String { file + ".graft.json" }

    /// The record of `file`, nil when it has no side file.
    public static func load(for file: String) throws -> FilePatchRecord? {
        let side = sidePath(for: file)
        guard access(side, F_OK) == 0 else { return nil }
        let data = try FileIO.readAll(path: side)
        do {
            return try JSONDecoder().decode(FilePatchRecord.self, from: Data(data))
        } catch {
            throw GraftError.fileRefused(path: file, reason: "its record \(side) is not graft's JSON (\(error)); move it away to patch the file afresh")
        }
    }

    func save(for file: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        try ProgramFileWriter.replace(FilePatchRecord.sidePath(for: file), with: Array(data), mode: 0o644, owner: nil)
    }
}

/// Writing program files: a new file next to the old one, renamed over it — never a write into a
/// file a process may be running ("Text file busy"; a running program would see its code change).
enum ProgramFileWriter {
    /// `bytes` to `path` through `.NAME.graft-tmp.PID` beside it, given `mode` (and `owner` when
    /// graft may), fsynced, renamed over `path` (`FileIO.replace`).
    static func replace(_ path: String, with bytes: [UInt8], mode: mode_t, owner: (uid: uid_t, gid: gid_t)?) throws {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let temporary = directory + ".\(name).graft-tmp.\(getpid())"
        do {
            try FileIO.replace(path, with: bytes, temporary: temporary, mode: mode, owner: owner)
        } catch {
            guard case .systemCall(let step, let err, _) = error else { throw error }
            throw GraftError.fileRefused(path: path, reason: step == "open" ? "cannot create \(temporary) beside it: \(Errno.describe(err))"
                                                                      : "cannot write it (\(step)): \(Errno.describe(err))")
        }
    }

    /// Processes running `path` as their program or with it mapped (a library, or a program run by
    /// qemu-user): same device and inode in `/proc/PID/exe` or `/proc/PID/maps`.
    static func processesUsing(_ path: String) -> [(pid: Int32, name: String)] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [] }
        let device = "\(String(major(info.st_dev), radix: 16, uppercase: false).leftPadded(2)):\(String(minor(info.st_dev), radix: 16).leftPadded(2))"
        guard let proc = opendir("/proc") else { return [] }
        defer { closedir(proc) }
        var found: [(Int32, String)] = []
        let me = getpid()
        while let entry = readdir(proc) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = Int32(name), pid != me else { continue }
            var exe = stat()
            if stat("/proc/\(pid)/exe", &exe) == 0, exe.st_dev == info.st_dev, exe.st_ino == info.st_ino {
                found.append((pid, ProcFS.commandName(pid)))
                continue
            }
            guard let maps = FileIO.readText(path: "/proc/\(pid)/maps") else { continue }
            for line in maps.split(separator: "\n") {
                let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
                if fields.count >= 5, fields[4] == "\(info.st_ino)", fields[3] == device {
                    found.append((pid, ProcFS.commandName(pid)))
                    break
                }
            }
        }
        return found.sorted { $0.0 < $1.0 }
    }
}

private func major(_ device: dev_t) -> UInt64 { (UInt64(device) >> 8 & 0xfff) | (UInt64(device) >> 32 & ~0xfff) }
private func minor(_ device: dev_t) -> UInt64 { (UInt64(device) & 0xff) | (UInt64(device) >> 12 & ~0xff) }

private extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
