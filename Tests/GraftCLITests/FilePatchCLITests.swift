import Foundation
import Glibc
import Testing
import TestSupport

// `graft symbols|patch|unpatch --file`: static programs for x86_64, i386, ARM (A32), Thumb-2 and
// AArch64 (TestTargets/file_price.c) patched on file, then run — natively, or under qemu-arm /
// qemu-aarch64 — to see the new value printed; refusals on purpose-built functions; reverts compared
// byte for byte.

/// graft without --state-dir (file commands have no journal).
private func graftFile(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try runCommand(try graftBinary(), arguments)
}

private func which(_ name: String) -> String { CrossTools.path(of: name) ?? "/usr/bin/\(name)" }

/// Runs a file_price program of `isa` (under qemu-user for ARM and AArch64); its stdout.
private func runProgram(_ path: String, isa: String) throws -> String {
    let result = try CrossTools.emulator(for: isa).map { try runCommand(which($0), [path]) } ?? runCommand(path, [])
    #expect(result.status == 0, "\(path): \(result.stderr)")
    return result.stdout
}

private func fileBytes(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map { [UInt8]($0) }
}

private func fileMode(_ path: String) -> mode_t {
    var info = stat()
    return stat(path, &info) == 0 ? info.st_mode & 0o7777 : 0
}

/// A copy of the victim `file_price_<isa>` in a fresh directory, mode 0750: (directory, program).
private func programCopy(_ isa: String) throws -> (String, String) {
    let source = try Victims.path("file_price_\(isa)")
    let dir = temporaryDirectory()
    let program = dir + "/prog"
    let bytes = try #require(fileBytes(source))
    #expect(FileManager.default.createFile(atPath: program, contents: Data(bytes)))
    chmod(program, 0o750)
    return (dir, program)
}

private let architectures = ["x86_64", "i386", "arm", "thumb", "aarch64"]
private let encodings = ["x86_64": "jmp rel32", "i386": "jmp rel32", "arm": "ldr pc, [pc, #-4]",
                         "thumb": "ldr.w pc, [pc, #0]", "aarch64": "ldr x16, #8; br x16"]

@Suite struct FilePatchCLITests {
    @Test(arguments: architectures)
    func patchToCheapAndReturnThenRevertByteForByte(isa: String) throws {
        try #require(CrossTools.canBuildAndRun(isa), "\(CrossTools.compiler(for: isa)) or \(CrossTools.emulator(for: isa) ?? "") is not installed (make deps)")
        let (dir, program) = try programCopy(isa)
        let pristine = try #require(fileBytes(program))
        #expect(try runProgram(program, isa: isa).hasPrefix("price 100\n"))

        let cheap = dir + "/cheap"
        let jump = try graftFile(["patch", "--file", program, "price", "--to", "cheap", "-o", cheap])
        #expect(jump.status == 0, "\(jump.stderr)")
        #expect(jump.stdout.contains("file patch 1: price in \(program)"), "\(jump.stdout)")
        #expect(jump.stdout.contains(encodings[isa]!), "\(jump.stdout)")
        #expect(try runProgram(cheap, isa: isa).hasPrefix("price 7\n"))
        #expect(fileMode(cheap) == 0o750)
        #expect(fileBytes(program) == pristine)   // the input is untouched
        let recordBytes = try #require(fileBytes(cheap + ".graft.json"))
        let record = try #require(try JSONSerialization.jsonObject(with: Data(recordBytes)) as? [String: Any])
        #expect(record["source"] as? String == program && record["file"] as? String == cheap)
        let entry = try #require((record["patches"] as? [[String: Any]])?.first)
        #expect(entry["instructionSet"] as? String == isa && entry["kind"] as? String == "jump" && entry["target"] as? String == "cheap")

        for value in ["55", "-3"] {
            let returned = dir + "/return\(value)"
            let stub = try graftFile(["patch", "--file", program, "price", "--return", value, "-o", returned])
            #expect(stub.status == 0, "\(stub.stderr)")
            #expect(try runProgram(returned, isa: isa).hasPrefix("price \(value)\n"))
        }

        let revert = try graftFile(["unpatch", "--file", cheap, "--all"])
        #expect(revert.status == 0, "\(revert.stderr)")
        #expect(revert.stdout.contains("file patch 1: reverted price"), "\(revert.stdout)")
        #expect(revert.stdout.contains("identical to its source, byte for byte"), "\(revert.stdout)")
        #expect(fileBytes(cheap) == pristine)
        #expect(access(cheap + ".graft.json", F_OK) != 0)
        #expect(fileMode(cheap) == 0o750)
        #expect(try runProgram(cheap, isa: isa).hasPrefix("price 100\n"))
    }

    @Test(arguments: architectures)
    func refusalsWriteNothing(isa: String) throws {
        try #require(CrossTools.canBuildAndRun(isa), "\(CrossTools.compiler(for: isa)) is not installed (make deps)")
        let (dir, program) = try programCopy(isa)
        let output = dir + "/out"
        let needed = ["x86_64": 5, "i386": 5, "arm": 8, "thumb": 8, "aarch64": 16][isa]!
        let short = try graftFile(["patch", "--file", program, "too_short", "--to", "cheap", "-o", output])
        expectOneLineError(short, "too_short is")
        expectOneLineError(short, "the patch needs \(needed)")
        let branch = try graftFile(["patch", "--file", program, "branch_into", "--to", "cheap", "-o", output])
        expectOneLineError(branch, "in branch_into jumps to")
        expectOneLineError(branch, "inside the bytes to be overwritten")
        if isa != "i386" {   // i386 code has no pc-relative loads, so no literal pool to refuse
            let pool = try graftFile(["patch", "--file", program, "pool_head", "--to", "cheap", "-o", output])
            expectOneLineError(pool, "pool_head keeps data at")
            expectOneLineError(pool, "a literal pool read by '")
        }
        let missing = try graftFile(["patch", "--file", program, "pricee", "--return", "1", "-o", output])
        expectOneLineError(missing, "no function 'pricee' in \(program); did you mean price")
        let inside = try graftFile(["patch", "--file", program, "price", "--to", "price", "-o", output])
        expectOneLineError(inside, "inside the bytes the patch overwrites")
        #expect(access(output, F_OK) != 0 && access(output + ".graft.json", F_OK) != 0)
    }

    @Test func thumbJumpAlignment() throws {
        try #require(CrossTools.canBuildAndRun("thumb"), "arm-linux-gnueabihf-gcc or qemu-arm is not installed (make deps)")
        let (dir, program) = try programCopy("thumb")
        #expect(try runProgram(program, isa: "thumb") == "price 100\neven 100\nodd 100\n")
        // thumb_even is at 0 mod 4: ldr.w pc, [pc, #0] and the literal, 8 bytes.
        let even = try graftFile(["patch", "--file", program, "thumb_even", "--to", "cheap", "-o", dir + "/even", "--json"])
        #expect(even.status == 0, "\(even.stderr)")
        let evenEvent = try #require(try jsonLines(even.stdout).first)
        #expect(evenEvent["encoding"] as? String == "ldr.w pc, [pc, #0]")
        #expect((evenEvent["new_bytes"] as? String)?.count == 16)
        #expect(try runProgram(dir + "/even", isa: "thumb") == "price 100\neven 7\nodd 100\n")
        // thumb_odd is at 2 mod 4: a nop first, so the literal the load reads is aligned; 10 bytes.
        let odd = try graftFile(["patch", "--file", program, "thumb_odd", "--to", "cheap", "-o", dir + "/odd", "--json"])
        let oddEvent = try #require(try jsonLines(odd.stdout).first)
        #expect(oddEvent["encoding"] as? String == "nop; ldr.w pc, [pc, #0]")
        #expect((oddEvent["new_bytes"] as? String)?.hasPrefix("00bfdff800f0") == true)
        let texts = (oddEvent["new_instructions"] as? [[String: Any]])?.compactMap { $0["text"] as? String } ?? []
        #expect(texts.first == "nop" && texts.last?.hasPrefix(".word 0x") == true, "\(texts)")
        #expect(oddEvent["instruction_set"] as? String == "thumb")
        #expect(try runProgram(dir + "/odd", isa: "thumb") == "price 100\neven 100\nodd 7\n")
        // A Thumb return stub: movs r0, #42; bx lr.
        let stub = try graftFile(["patch", "--file", program, "thumb_odd", "--return", "42", "-o", dir + "/ret"])
        #expect(stub.stdout.contains("movs r0, #0x2a"), "\(stub.stdout)")
        #expect(try runProgram(dir + "/ret", isa: "thumb") == "price 100\neven 100\nodd 42\n")
    }

    @Test(arguments: ["arm", "thumb"])
    func jumpsBetweenARMAndThumbInterwork(isa: String) throws {
        try #require(CrossTools.canBuildAndRun(isa), "arm-linux-gnueabihf-gcc or qemu-arm is not installed (make deps)")
        let (dir, program) = try programCopy(isa)
        // cheap_other is in the other instruction set: the literal carries bit 0 exactly when it is Thumb.
        let result = try graftFile(["patch", "--file", program, "price", "--to", "cheap_other", "-o", dir + "/p", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let event = try #require(try jsonLines(result.stdout).first)
        let targetAddress = try #require((event["target_address"] as? String).flatMap { UInt64($0.dropFirst(2), radix: 16) })
        let literal = try #require((event["new_instructions"] as? [[String: Any]])?.last?["text"] as? String)
        #expect(literal == ".word 0x" + String(isa == "arm" ? targetAddress | 1 : targetAddress, radix: 16))
        #expect(try runProgram(dir + "/p", isa: isa).hasPrefix("price 8\n"))
    }

    @Test func dryRunWritesNothing() throws {
        let (dir, program) = try programCopy("x86_64")
        let before = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        let pristine = try #require(fileBytes(program))
        for mode in [["-o", dir + "/out"], ["--in-place"]] {
            let result = try graftFile(["patch", "--file", program, "price", "--return", "0", "--dry-run"] + mode)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.hasPrefix("dry run: would patch price in \(program)"), "\(result.stdout)")
            #expect(result.stdout.contains("checks passed:\n  ok  "))
            #expect(result.stdout.contains("new bytes:      31 c0 c3"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == before)
        #expect(fileBytes(program) == pristine)
    }

    @Test func inPlaceKeepsTheOriginalAndPermissions() throws {
        try #require(CrossTools.canBuildAndRun("aarch64"), "aarch64-linux-gnu-gcc or qemu-aarch64 is not installed (make deps)")
        let (_, program) = try programCopy("aarch64")
        let pristine = try #require(fileBytes(program))
        let first = try graftFile(["patch", "--file", program, "price", "--to", "cheap", "--in-place"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("the original is kept as \(program).orig"))
        #expect(fileBytes(program + ".orig") == pristine)
        #expect(fileMode(program) == 0o750 && fileMode(program + ".orig") == 0o750)
        #expect(try runProgram(program, isa: "aarch64") == "price 7\n")
        // A second patch of the same file: the .orig stays the pristine file; an overlap is refused.
        let again = try graftFile(["patch", "--file", program, "price", "--return", "1", "--in-place"])
        expectOneLineError(again, "price at 0x")
        expectOneLineError(again, "is already patched by graft (file patch 1)")
        let second = try graftFile(["patch", "--file", program, "cheap", "--return", "9", "--in-place"])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("already holds the original; kept as it is"))
        #expect(fileBytes(program + ".orig") == pristine)
        #expect(try runProgram(program, isa: "aarch64") == "price 9\n")
        // Revert one, then the rest: byte for byte the original.
        let one = try graftFile(["unpatch", "--file", program, "2"])
        #expect(one.stdout.contains("1 patch still recorded"), "\(one.stdout)")
        #expect(try runProgram(program, isa: "aarch64") == "price 7\n")
        let all = try graftFile(["unpatch", "--file", program, "--all", "--json"])
        let events = try jsonLines(all.stdout)
        #expect(events.count == 1 && events.first?["outcome"] as? String == "reverted" && events.first?["id"] as? Int == 1)
        #expect(fileBytes(program) == pristine)
        #expect(fileMode(program) == 0o750)
        // Without a record, --all restores FILE.orig.
        #expect(try graftFile(["patch", "--file", program, "price", "--return", "3", "--in-place"]).status == 0)
        unlink(program + ".graft.json")
        let restore = try graftFile(["unpatch", "--file", program, "--all"])
        #expect(restore.stdout.contains("restored \(program) from \(program).orig"), "\(restore.stdout)")
        #expect(fileBytes(program) == pristine)
    }

    @Test func inPlaceThroughASymbolicLinkReplacesTheFileItNames() throws {
        let (dir, program) = try programCopy("x86_64")
        let link = dir + "/link"
        #expect(symlink(program, link) == 0)
        let result = try graftFile(["patch", "--file", link, "price", "--return", "4", "--in-place"])
        #expect(result.status == 0, "\(result.stderr)")
        var info = stat()
        #expect(lstat(link, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK)   // still the link
        #expect(access(program + ".orig", F_OK) == 0)
        #expect(try runProgram(link, isa: "x86_64") == "price 4\n")
        #expect(try graftFile(["unpatch", "--file", link, "--all"]).status == 0)
        #expect(fileBytes(program) == fileBytes(program + ".orig"))
    }

    @Test func runningFileIsRefusedUnlessForced() throws {
        let (_, program) = try programCopy("x86_64")
        let victim = try Victim.launchCommand(program, arguments: ["wait"], stdin: true)
        defer { victim.kill() }
        let refused = try graftFile(["patch", "--file", program, "price", "--return", "1", "--in-place"])
        expectOneLineError(refused, "it is in use by process \(victim.pid)")
        expectOneLineError(refused, "pass --force")
        #expect(access(program + ".orig", F_OK) != 0)
        var before = stat()
        stat(program, &before)
        let forced = try graftFile(["patch", "--file", program, "price", "--return", "1", "--in-place", "--force"])
        #expect(forced.status == 0, "\(forced.stderr)")
        var after = stat()
        stat(program, &after)
        #expect(before.st_ino != after.st_ino)   // a new file renamed over, never a write into the running one
        #expect(victim.procStatus("State") != nil)   // still running
        #expect(try runProgram(program, isa: "x86_64") == "price 1\n")
        // The running process keeps the old (now unlinked) file: the new one is in nobody's use.
        let unpatch = try graftFile(["unpatch", "--file", program, "--all"])
        #expect(unpatch.status == 0, "\(unpatch.stderr)")
    }

    @Test func changedFileIsNotReverted() throws {
        let (dir, program) = try programCopy("x86_64")
        let out = dir + "/out"
        #expect(try graftFile(["patch", "--file", program, "price", "--return", "5", "-o", out]).status == 0)
        let record = try #require(try jsonLines(try graftFile(["patch", "--file", program, "price", "--return", "5", "-o", out, "--dry-run", "--json"]).stdout).first)
        let offset = try #require((record["file_offset"] as? String).flatMap { Int($0.dropFirst(2), radix: 16) })
        var bytes = try #require(fileBytes(out))
        bytes[offset] ^= 0xff
        #expect(FileManager.default.createFile(atPath: out, contents: Data(bytes)))
        let result = try graftFile(["unpatch", "--file", out, "--all"])
        expectOneLineError(result, "the file changed since; nothing restored")
        #expect(fileBytes(out) == bytes)
    }

    @Test func symbolsAndArguments() throws {
        try #require(CrossTools.canBuildAndRun("thumb"), "arm-linux-gnueabihf-gcc is not installed (make deps)")
        let (_, program) = try programCopy("thumb")
        let table = try graftFile(["symbols", "--file", program, "price"])
        #expect(table.status == 0)
        #expect(table.stdout.hasPrefix("ADDRESS  SIZE  ISA    NAME\n"), "\(table.stdout)")
        #expect(table.stdout.contains("thumb  price\n"))
        let json = try jsonLines(try graftFile(["symbols", "--file", program, "thumb_*", "--json"]).stdout)
        #expect(json.map { $0["name"] as? String } == ["thumb_even", "thumb_odd"])
        #expect(json.allSatisfy { $0["event"] as? String == "symbol" && $0["instruction_set"] as? String == "thumb" })
        expectOneLineError(try graftFile(["symbols", "--file", program, "nothing_*"]), "no function 'nothing_*'")
        expectOneLineError(try graftFile(["patch", "--file", program, "price", "--return", "1"]), "give exactly one of -o OUTPUT or --in-place")
        expectOneLineError(try graftFile(["patch", "--file", program, "price", "-o", "/tmp/x"]), "give exactly one of --to NAME or --return INT")
        expectOneLineError(try graftFile(["patch", "--file", program, "price", "--return", "0x100000000", "-o", "/tmp/x"]),
                           "does not fit the 32-bit register r0")
        expectOneLineError(try graftFile(["patch", "--file", program, "price+4", "--return", "1", "-o", "/tmp/x"]),
                           "a file patch goes at a function's entry")
        expectOneLineError(try graftFile(["patch", "--file", program, "price", "--return", "1", "-o", program]),
                           "is the file itself; use --in-place")
        expectOneLineError(try graftFile(["unpatch", "--file", program, "--all"]), "graft has no record of patching it")
        let text = temporaryDirectory() + "/notes.txt"
        #expect(FileManager.default.createFile(atPath: text, contents: Data(String(repeating: "not a program\n", count: 20).utf8)))
        expectOneLineError(try graftFile(["patch", "--file", text, "price", "--return", "1", "-o", text + ".out"]), "not an ELF file")
    }
}

/// A shared library nobody here wrote: the cross toolchain's own libc (Debian's armhf and arm64
/// glibc), patched on file and loaded by its real dynamic loader under qemu-user.
@Suite struct LibraryFilePatchCLITests {
    @Test(arguments: [("arm", "arm-linux-gnueabihf"), ("aarch64", "aarch64-linux-gnu")])
    func crossLibcGetpid(isa: String, triple: String) throws {
        try #require(CrossTools.canBuildAndRun(isa), "\(CrossTools.compiler(for: isa)) or \(CrossTools.emulator(for: isa) ?? "") is not installed (make deps)")
        let libc = "/usr/\(triple)/lib/libc.so.6"
        let program = try Victims.path("libc_pid_\(isa)")
        let dir = temporaryDirectory()
        func run() throws -> String {
            let result = try runCommand(which(CrossTools.emulator(for: isa)!), ["-L", "/usr/\(triple)", "-E", "LD_LIBRARY_PATH=\(dir)", program])
            #expect(result.status == 0, "\(result.stderr)")
            return result.stdout
        }
        #expect(try run().hasSuffix(" different\n"))
        // ET_DYN: the jump is a relative branch (an absolute literal would not be relocated).
        let jump = try graftFile(["patch", "--file", libc, "getpid", "--to", "getppid", "-o", dir + "/libc.so.6"])
        #expect(jump.status == 0, "\(jump.stderr)")
        #expect(jump.stdout.contains(isa == "arm" ? "(b.w (imm24))" : "(b (imm26))"), "\(jump.stdout)")
        #expect(try run().hasSuffix(" same\n"))
        #expect(try graftFile(["unpatch", "--file", dir + "/libc.so.6", "--all"]).status == 0)
        #expect(fileBytes(dir + "/libc.so.6") == fileBytes(libc))
        let stub = try graftFile(["patch", "--file", libc, "getpid", "--return", "4242", "-o", dir + "/libc.so.6"])
        #expect(stub.status == 0, "\(stub.stderr)")
        #expect(try run().hasPrefix("pid 4242 "))
    }
}

/// ELFFile reads 32-bit files now; the live engine must still refuse a 32-bit process rather than
/// decode its code as x86_64.
@Suite struct ThirtyTwoBitProcessCLITests {
    @Test func liveCommandsRefuseAnI386Process() throws {
        try #require(CrossTools.canBuildAndRun("i386"), "i686-linux-gnu-gcc is not installed (make deps)")
        let victim = try Victim.launch("file_price_i386", arguments: ["wait"], stdin: true)
        defer { victim.kill() }
        let state = temporaryDirectory()
        let pid = String(victim.pid)
        let patch = try graft(["patch", "-p", pid, "price", "--return", "1"], stateDir: state)
        expectOneLineError(patch, "process \(pid) runs 32-bit i386 code; graft attaches to x86_64 processes only")
        expectOneLineError(try graft(["symbols", "-p", pid, "price"], stateDir: state), "runs 32-bit i386 code")
        expectOneLineError(try graft(["hook", "-p", pid, "price", "--count", "1"], stateDir: state), "runs 32-bit i386 code")
    }
}
