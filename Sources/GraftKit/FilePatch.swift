import GraftCore
import GraftELF
import GraftMachine
import Glibc

/// The outcome of `FilePatcher.patch`.
public struct FilePatchOutcome: Sendable {
    public let plan: FilePatchPlan
    public let dryRun: Bool
    /// The file written (or, on a dry run, that would be).
    public let output: String
    /// The patch's id in the output's record.
    public let id: Int
    /// The side file holding the record.
    public let recordPath: String
    /// `--in-place`: the copy of the original (`FILE.orig`), and whether this patch made it.
    public let backup: String?
    public let backupCreated: Bool
    /// The output's permission bits (the input's).
    public let mode: UInt32
}

/// The outcome of `FilePatcher.unpatch`.
public struct FileUnpatchOutcome: Sendable {
    public let path: String
    /// The patches whose original bytes were put back.
    public let reverted: [FilePatchEntry]
    /// Restored whole from this copy (`FILE.orig`) when the file had no record.
    public let restoredFrom: String?
    /// Patches still recorded (those not named).
    public let remaining: Int
    /// Every patch is reverted and the file now equals the recorded source byte for byte
    /// (nil when the source is gone or was the file itself, as with --in-place).
    public let identicalToSource: Bool?
}

/// Patching program files rather than processes (`graft patch --file`): the same checks as a live
/// patch where they apply, for x86_64, i386, ARM (A32 and Thumb-2) and AArch64 ELF files; the result
/// written as a new file renamed into place, keeping the file's permissions, with a record beside it.
public enum FilePatcher {
    /// The functions of `path`, every one or those matching the glob.
    public static func symbols(path: String, matching pattern: String?) throws -> (file: ProgramFile, functions: [FileFunction]) {
        let file = try ProgramFile(path: path)
        return (file, file.functions(matching: pattern))
    }

    /// Computes and checks a file patch; writes nothing.
    public static func plan(path: String, location: String, action: PatchAction) throws -> FilePatchPlan {
        let file = try ProgramFile(path: path)
        let record = try FilePatchRecord.load(for: path)
        return try planner(file, record).plan(location: location, action: action)
    }

    /// Plans, checks and writes a file patch: to `output`, or over `path` with `inPlace` (the original
    /// kept as `path.orig`, unless that exists). A file some process runs is replaced only with
    /// `force`. `dryRun` stops after the checks.
    public static func patch(path: String, location: String, action: PatchAction, output: String?, inPlace: Bool,
                             force: Bool = false, dryRun: Bool = false) throws -> FilePatchOutcome {
        guard inPlace != (output != nil) else {
            throw GraftError.usage("give exactly one of -o OUTPUT or --in-place: where the patched file goes")
        }
        // Renaming over a symbolic link would replace the link: --in-place works on the file it names.
        let path = inPlace ? realFile(path) : path
        let file = try ProgramFile(path: path)
        let input = try FilePatchRecord.load(for: path)
        let destination = output ?? path
        var info = stat(), existing = stat()
        guard stat(path, &info) == 0 else { throw GraftError.fileRefused(path: path, reason: "cannot stat it: \(Errno.describe(errno))") }
        let destinationExists = stat(destination, &existing) == 0
        if destinationExists, (existing.st_mode & S_IFMT) == S_IFDIR {
            throw GraftError.fileRefused(path: destination, reason: "it is a directory; -o names the file to write")
        }
        if !inPlace, destinationExists, existing.st_dev == info.st_dev, existing.st_ino == info.st_ino {
            throw GraftError.fileRefused(path: path, reason: "-o \(destination) is the file itself; use --in-place, which keeps \(path).orig")
        }
        let plan = try planner(file, input).plan(location: location, action: action)
        if destinationExists, !force {
            try refuseIfRunning(destination, what: inPlace ? "--in-place" : "-o \(destination)", live: file.architecture == Architecture.host)
        }
        let id = input?.nextID ?? 1
        let backup = inPlace ? path + ".orig" : nil
        let backupExists = backup.map { access($0, F_OK) == 0 } ?? false
        let outcome = FilePatchOutcome(plan: plan, dryRun: dryRun, output: destination, id: id,
                                       recordPath: FilePatchRecord.sidePath(for: destination), backup: backup,
                                       backupCreated: backup != nil && !backupExists, mode: UInt32(info.st_mode & 0o7777))
        if dryRun { return outcome }

        var bytes = try FileIO.readAll(path: path)
        let offset = Int(plan.fileOffset)
        guard offset + plan.newBytes.count <= bytes.count, Array(bytes[offset..<offset + plan.originalBytes.count]) == plan.originalBytes else {
            throw GraftError.fileRefused(path: path, reason: "it changed while graft was planning; nothing written")
        }
        let original = bytes
        bytes.replaceSubrange(offset..<offset + plan.newBytes.count, with: plan.newBytes)
        let owner = (uid: info.st_uid, gid: info.st_gid)
        if let backup, !backupExists {
            try ProgramFileWriter.replace(backup, with: original, mode: info.st_mode, owner: owner)
        }
        var record = input ?? FilePatchRecord(file: absolute(destination), source: absolute(path), sourceBuildID: file.elf.buildID, nextID: 1, patches: [])
        record.file = absolute(destination)
        record.nextID = id + 1
        record.patches.append(entry(plan, id: id))
        try ProgramFileWriter.replace(destination, with: bytes, mode: info.st_mode, owner: inPlace ? owner : nil)
        try record.save(for: destination)
        return outcome
    }

    /// Reverts patches of `path` (`ids`, or every one when nil) from its record, byte for byte, after
    /// checking every patched range still holds graft's bytes; without a record, `--all` restores
    /// `path.orig`. The file is replaced (new file, rename), keeping its permissions; a running file
    /// only with `force`.
    public static func unpatch(path: String, ids: [Int]?, force: Bool = false) throws -> FileUnpatchOutcome {
        let path = realFile(path)
        var info = stat()
        guard stat(path, &info) == 0 else { throw GraftError.fileRefused(path: path, reason: "cannot stat it: \(Errno.describe(errno))") }
        let owner = (uid: info.st_uid, gid: info.st_gid)
        guard var record = try FilePatchRecord.load(for: path) else {
            let backup = path + ".orig"
            guard ids == nil, access(backup, R_OK) == 0 else {
                throw GraftError.fileRefused(path: path, reason: "graft has no record of patching it (no \(FilePatchRecord.sidePath(for: path))\(ids == nil ? ", no \(backup)" : "; --all restores \(backup) when it exists"))")
            }
            if !force { try refuseIfRunning(path, what: "unpatch") }
            try ProgramFileWriter.replace(path, with: try FileIO.readAll(path: backup), mode: info.st_mode, owner: owner)
            return FileUnpatchOutcome(path: path, reverted: [], restoredFrom: backup, remaining: 0, identicalToSource: nil)
        }
        let chosen = ids.map { wanted in record.patches.filter { wanted.contains($0.id) } } ?? record.patches
        if let ids, let missing = ids.first(where: { id in !record.patches.contains { $0.id == id } }) {
            throw GraftError.fileRefused(path: path, reason: "no file patch \(missing) is recorded in \(FilePatchRecord.sidePath(for: path)) (recorded: \(record.patches.map { String($0.id) }.joined(separator: ", ")))")
        }
        var bytes = try FileIO.readAll(path: path)
        for entry in chosen {
            let offset = Int(entry.offsetValue), new = entry.new
            guard offset + new.count <= bytes.count else {
                throw GraftError.fileRefused(path: path, reason: "file patch \(entry.id) (\(entry.function)) lies past the file's end; nothing restored")
            }
            let found = Array(bytes[offset..<offset + new.count])
            guard found == new else {
                throw GraftError.fileRefused(path: path, reason: "the bytes of file patch \(entry.id) (\(entry.function), file offset \(entry.fileOffset)) are \(hexBytes(found)), not graft's \(hexBytes(new)): the file changed since; nothing restored")
            }
        }
        if !force { try refuseIfRunning(path, what: "unpatch") }
        for entry in chosen.reversed() {
            let offset = Int(entry.offsetValue)
            bytes.replaceSubrange(offset..<offset + entry.new.count, with: entry.original)
        }
        try ProgramFileWriter.replace(path, with: bytes, mode: info.st_mode, owner: owner)
        record.patches.removeAll { entry in chosen.contains { $0.id == entry.id } }
        var identical: Bool?
        if record.patches.isEmpty {
            unlink(FilePatchRecord.sidePath(for: path))
            if record.source != absolute(path), let source = try? FileIO.readAll(path: record.source) { identical = source == bytes }
        } else {
            try record.save(for: path)
        }
        return FileUnpatchOutcome(path: path, reverted: chosen, restoredFrom: nil, remaining: record.patches.count, identicalToSource: identical)
    }

    /// `path` from the root, so the record names the same files from any working directory.
    private static func absolute(_ path: String) -> String {
        guard !path.hasPrefix("/"), let cwd = getcwd(nil, 0) else { return path }
        defer { free(cwd) }
        let directory = String(cString: cwd)
        let relative = path.hasPrefix("./") ? String(path.dropFirst(2)) : path
        return (directory == "/" ? "" : directory) + "/" + relative
    }

    /// `path` with symbolic links resolved (as given when it cannot be).
    private static func realFile(_ path: String) -> String {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK, let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private static func planner(_ file: ProgramFile, _ record: FilePatchRecord?) -> FilePatchPlanner {
        var planner = FilePatchPlanner(file: file)
        planner.patched = (record?.patches ?? []).map { ($0.id, $0.addressValue..<($0.addressValue + UInt64($0.new.count))) }
        return planner
    }

    /// `live`: the file is native code, so `graft patch -p` could change the running process instead.
    private static func refuseIfRunning(_ path: String, what: String, live: Bool = false) throws {
        let users = ProgramFileWriter.processesUsing(path)
        guard let first = users.first else { return }
        let list = users.prefix(5).map { "\($0.pid) (\($0.name))" }.joined(separator: ", ") + (users.count > 5 ? ", …" : "")
        throw GraftError.fileRefused(path: path, reason: "it is in use by process \(list): \(what) would replace the file under it (the running program keeps its old code\(live ? "; `graft patch -p \(first.pid) …` changes it live" : "")); pass --force to replace the file anyway")
    }

    private static func entry(_ plan: FilePatchPlan, id: Int) -> FilePatchEntry {
        var entry = FilePatchEntry(id: id, function: plan.function, address: hex(plan.address), fileOffset: hex(plan.fileOffset),
                                   instructionSet: plan.instructionSet, kind: "jump", encoding: plan.encoding,
                                   originalBytes: hexString(plan.originalBytes), newBytes: hexString(plan.newBytes),
                                   appliedAt: isoTimestamp())
        switch plan.action {
        case .jump:
            entry.target = plan.target?.name
            entry.targetAddress = plan.target.map { hex($0.address) }
        case .returnValue(let value):
            entry = FilePatchEntry(id: id, function: plan.function, address: entry.address, fileOffset: entry.fileOffset,
                                   instructionSet: plan.instructionSet, kind: "return", returnValue: value, encoding: plan.encoding,
                                   originalBytes: entry.originalBytes, newBytes: entry.newBytes, appliedAt: entry.appliedAt)
        }
        return entry
    }
}

extension FilePatchOutcome {
    /// `{"event":"patch","file":…}`: the live patch's keys where they mean the same, plus the file's.
    public var json: JSON {
        var fields: [(String, JSON)] = [
            ("event", "patch"), ("dry_run", .bool(dryRun)), ("file", .string(plan.path)), ("output", .string(output)),
            ("id", .int(Int64(id))), ("address", .string(hex(plan.address))), ("file_offset", .string(hex(plan.fileOffset))),
            ("function", .string(plan.function)), ("instruction_set", .string(plan.instructionSet.rawValue)),
            ("kind", .string({ if case .jump = plan.action { return "jump" } else { return "return" } }())),
        ]
        switch plan.action {
        case .jump:
            fields.append(("target", .string(plan.target?.name ?? "")))
            fields.append(("target_address", .string(plan.target.map { hex($0.address) } ?? "")))
        case .returnValue(let value):
            fields.append(("return_value", .int(value)))
        }
        fields += [
            ("encoding", .string(plan.encoding)), ("kept_endbr", .bool(plan.keptEndbr)),
            ("original_bytes", .string(hexString(plan.originalBytes))), ("new_bytes", .string(hexString(plan.newBytes))),
            ("original_instructions", .array(plan.originalInstructions.map(\.json))),
            ("new_instructions", .array(plan.newInstructions.map(\.json))),
            ("checks", .array(plan.checks.map { .string($0) })),
            ("record", .string(recordPath)), ("mode", .string("0" + String(mode, radix: 8))),
        ]
        if let backup { fields.append(("backup", .string(backup))) }
        return .object(fields)
    }
}

extension FileUnpatchOutcome {
    /// One `{"event":"unpatch",…}` per reverted patch, or one for a restore from `FILE.orig`.
    public var json: [JSON] {
        if let restoredFrom {
            return [.object([("event", "unpatch"), ("file", .string(path)), ("outcome", "restored"), ("from", .string(restoredFrom))])]
        }
        return reverted.map { entry in
            .object([("event", "unpatch"), ("file", .string(path)), ("id", .int(Int64(entry.id))), ("outcome", "reverted"),
                     ("function", .string(entry.function)), ("address", .string(entry.address)), ("file_offset", .string(entry.fileOffset)),
                     ("original_bytes", .string(entry.originalBytes))]
                    + (identicalToSource.map { [("identical_to_source", JSON.bool($0))] } ?? []))
        }
    }
}

extension FileFunction {
    /// `{"event":"symbol",…}` as the live `symbols` prints it, with the file as `path`.
    public func json(path: String) -> JSON {
        .object([("event", "symbol"), ("address", .string(hex(address))), ("size", .uint(size)),
                 ("instruction_set", .string(instructionSet.rawValue)), ("path", .string(path)), ("name", .string(name))]
                + (name != symbol.name ? [("mangled", JSON.string(symbol.name))] : []))
    }
}
