import ArgumentParser
import GraftCore
import GraftKit
import Glibc

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a process's applied patches as a patch file (YAML) for `graft apply`.",
        discussion: """
        Each patch: the function (MODULE!NAME[+0xOFF]), the module's name and build-id, the kind \
        (return N, jump to a LOCATION or a library's function), its original and new bytes. \
        A GOT or vtable patch: the slot's module and build-id, the symbol (got) or class and slot \
        (vtable), the target, and the function the slot led to (its word is an address that differs \
        per process). A patch graft cannot name again is not exported (a warning names it).
        Examples: graft export -p 4242 > fix.yaml   |   graft export -p 4242 --json
        """)

    @OptionGroup var process: ProcessOptions

    func validate() throws {
        try process.requireTargets(single: true, command: "export")
    }

    func run() throws {
        let pid = process.pid
        let (file, skipped) = try process.graft.export(pid: pid)
        for note in skipped { Output.warning("not exported: \(note)") }
        if process.json {
            for entry in file.entries { Output.json(entry.json(pid: pid)) }
            return
        }
        let exe = FileIO.readLink("/proc/\(pid)/exe") ?? "?"
        print(file.yaml(comment: "graft patch file: \(file.entries.count) patch\(file.entries.count == 1 ? "" : "es") exported from process \(pid) (\(exe))\napply with: graft apply -n NAME FILE (or -p PID); undo with: graft apply --revert FILE"), terminator: "")
    }
}

struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Apply a patch file (from `graft export`) to processes, where the build-id and the original bytes match; idempotent.",
        discussion: """
        Every entry is checked in a process before anything is written there (module and build-id, \
        memory holding the file's original bytes — for a GOT or vtable slot, the slot leading to the \
        file's original function —, then graft's usual checks); one refusal means \
        nothing is written in that process, and is named. An entry already applied is left as it is. \
        Without -p or -n: every process running a program the file names (its modules' executables).
        Examples:
          graft apply -n nginx fix.yaml
          graft apply -p 8153,8293 fix.yaml --json
          graft apply --revert fix.yaml
        """)

    @OptionGroup var process: ProcessOptions

    @Argument(help: "The patch file (YAML, as `graft export` writes it).")
    var file: String

    @Flag(name: .long, help: "Revert the file's patches where they are applied instead.")
    var revert = false

    @Flag(name: .customLong("dry-run"), help: "Check every entry in every process; write nothing.")
    var dryRun = false

    func validate() throws {
        try process.requireTargets(optional: true, command: "apply")
        if revert && dryRun { throw ValidationError("--dry-run goes with apply, not with --revert") }
    }

    func run() throws {
        let text: String
        do {
            text = String(decoding: try FileIO.readAll(path: file), as: UTF8.self)
        } catch {
            throw GraftError.usage("patch file \(file): cannot read it: \(Errno.describe(errno))")
        }
        let patchFile = try PatchFile.parse(text, path: file)
        var pids = try process.targets()
        if process.pidArguments.isEmpty && process.names.isEmpty {
            let programs = Set(patchFile.entries.map(\.module))
            var seen: Set<Int32> = []
            for name in programs.sorted() {
                for pid in ProcessSet.named(name) where seen.insert(pid).inserted { pids.append(pid) }
            }
            if pids.isEmpty {
                throw GraftError.usage("no process runs \(programs.sorted().joined(separator: " or ")); give -p PID or -n NAME")
            }
        }
        var results: [ApplyResult] = []
        for pid in pids {
            do {
                let done = try withTerminationDeferred {
                    revert ? try process.cancellableGraft.revert(patchFile, pid: pid) : try process.cancellableGraft.apply(patchFile, pid: pid, dryRun: dryRun)
                }
                results += done
            } catch let error as GraftError {
                results += patchFile.entries.map { ApplyResult(pid: pid, entry: $0, outcome: .refused, message: error.description) }
            }
        }
        for result in results {
            if process.json {
                Output.json(result.json)
                continue
            }
            var line = "process \(result.pid) (\(ProcFSName.of(result.pid))): \(result.entry.summary): \(result.outcome.rawValue)"
            if let id = result.patchID, result.outcome == .applied || result.outcome == .reverted { line += " (patch \(id))" }
            if let message = result.message { line += ": \(message)" }
            Output.line(line)
        }
        let refused = results.filter { $0.outcome == .refused }
        if !refused.isEmpty {
            let where_ = Set(refused.map(\.pid)).sorted().map(String.init).joined(separator: ", ")
            throw GraftError.usage("\(refused.count) of \(results.count) entries refused (process \(where_)); nothing was written in a process that refused (see above)")
        }
        if !process.json {
            let changed = results.filter { $0.outcome == .applied || $0.outcome == .reverted }.count
            let verb = revert ? "reverted" : dryRun ? "would apply" : "applied"
            if changed == 0 && !dryRun {
                Output.line(revert ? "nothing to revert in \(pids.count) process\(pids.count == 1 ? "" : "es")" : "nothing to do: every patch is already applied in \(pids.count) process\(pids.count == 1 ? "" : "es")")
            } else {
                let count = dryRun ? results.filter { $0.outcome == .notApplied }.count : changed
                Output.line("\(verb) \(count) patch\(count == 1 ? "" : "es") in \(pids.count) process\(pids.count == 1 ? "" : "es")")
            }
        }
    }
}

extension PatchFile.Entry {
    func json(pid: Int32) -> JSON {
        var fields: [(String, JSON)] = [("event", "export"), ("pid", .int(Int64(pid))), ("location", .string(location)), ("module", .string(module)),
                                        ("build_id", buildID.map { .string($0) } ?? .null), ("kind", .string(kind))]
        if let returnValue { fields.append(("return_value", .int(returnValue))) }
        if let target { fields.append(("target", .string(target))) }
        if let library { fields.append(("library", .string(library))) }
        if let libraryBuildID { fields.append(("library_build_id", .string(libraryBuildID))) }
        if let symbol { fields.append(("symbol", .string(symbol))) }
        if let className { fields.append(("class", .string(className))) }
        if let slot { fields.append(("slot", .int(Int64(slot)))) }
        if let method { fields.append(("method", .string(method))) }
        if let originalFunction {
            fields.append(("original", .string(originalFunction)))
        } else {
            fields += [("original_bytes", .string(hexString(original))), ("new_bytes", .string(hexString(new)))]
        }
        return .object(fields)
    }
}

extension ApplyResult {
    var json: JSON {
        var fields: [(String, JSON)] = [("event", "apply"), ("pid", .int(Int64(pid))), ("location", .string(entry.location)),
                                        ("kind", .string(entry.kind)), ("outcome", .string(outcome.rawValue))]
        if let patchID { fields.append(("id", .int(Int64(patchID)))) }
        if let message { fields.append(("message", .string(message))) }
        return .object(fields)
    }
}
