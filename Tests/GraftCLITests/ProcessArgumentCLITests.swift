import Foundation
import Glibc
import Testing
import TestSupport

/// A kernel thread visible in this PID namespace (kthreadd is PID 2 on a host; a container sees none).
private let kernelThread: Int32? = {
    func isKernelThread(_ pid: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
        let lines = status.split(separator: "\n")
        return !lines.contains { $0.hasPrefix("VmSize:") }
            && (pid == 2 || lines.contains { $0.hasPrefix("Kthread:") && $0.hasSuffix("1") })
    }
    if isKernelThread(2) { return 2 }
    let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
    return pids.first(where: isKernelThread)
}()

/// Every command that takes -p, with the rest of a valid command line.
private let commandsTakingPID: [(name: String, rest: [String])] = [
    ("symbols", []), ("patch", ["getpid", "--return", "1"]), ("patch", ["getpid", "--return", "1", "--dry-run"]),
    ("list", []), ("unpatch", ["--all"]), ("hook", ["getpid", "--duration", "0.1"]), ("trace", ["--duration", "0.1"]),
]

/// `-p` and `--pid`: a value that is not a process id is named, whatever the command, and nothing
/// is attached; kernel threads and graft itself are refused before anything is read.
@Suite struct ProcessArgumentCLITests {
    @Test func aValueThatIsNotAProcessIDIsNamed() throws {
        let state = temporaryDirectory()
        let cases: [([String], String)] = [
            (["-p", "-1"], "-p -1: a process id is a positive number"),
            (["--pid", "-1"], "-p -1: a process id is a positive number"),
            (["--pid=-1"], "-p -1: a process id is a positive number"),
            (["-p", "0"], "-p 0: a process id is a positive number"),
            (["-p", "abc"], "-p abc: a process id is a positive number"),
            (["-p", "0x10"], "-p 0x10: a process id is a positive number"),
            (["-p", "99999999999"], "-p 99999999999: too large for a process id (at most 2147483647)"),
        ]
        for (command, rest) in commandsTakingPID {
            for (pidArguments, message) in cases {
                let result = try graft([command] + pidArguments + rest, stateDir: state)
                expectOneLineError(result, message)
                #expect(result.status == 64, "\(command) \(pidArguments): \(result.stderr)")
            }
        }
        // A PID that is a number is looked up.
        expectOneLineError(try graft(["list", "-p", "+999999999"], stateDir: state), "no process with PID 999999999")
        // Patch ids likewise (`-1` was dropped, and the error said only "give patch ids or --all").
        for id in ["-1", "0", "abc"] {
            let result = try graft(["unpatch", "-p", "999999999", "1", id], stateDir: state)
            expectOneLineError(result, "'\(id)' is not a patch id (ids are positive integers, see `graft list`)")
            #expect(result.status == 64)
        }
        expectOneLineError(try graft(["unpatch", "-p", "999999999", "--bogus"], stateDir: state), "Unknown option '--bogus'")
        expectOneLineError(try graft(["trace", "-p", "999999999", "--tid", "-1"], stateDir: state), "--tid -1: a thread id is a positive number")
    }

    @Test(.enabled(if: kernelThread != nil, "no kernel thread is visible in this PID namespace"))
    func hookAndTraceRefuseAKernelThread() throws {
        let pid = String(try #require(kernelThread))
        let state = temporaryDirectory()
        for (command, rest) in commandsTakingPID where command == "hook" || command == "trace" {
            let result = try graft([command, "-p", pid] + rest, stateDir: state)
            expectOneLineError(result, "permission denied to trace process \(pid): it is a kernel thread, which has no user-space code to patch")
            #expect(result.status == 1)
        }
    }

    /// symbols, patch, list and unpatch refuse it before reading anything (`symbols` printed an
    /// empty table, `patch` "no function 'getpid'", `list`/`unpatch` "no patches").
    @Test(.enabled(if: kernelThread != nil, "no kernel thread is visible in this PID namespace"))
    func symbolsPatchListAndUnpatchRefuseAKernelThread() throws {
        let pid = String(try #require(kernelThread))
        let state = temporaryDirectory()
        for (command, rest) in commandsTakingPID where command != "hook" && command != "trace" {
            let result = try graft([command, "-p", pid] + rest, stateDir: state)
            expectOneLineError(result, "permission denied to trace process \(pid): it is a kernel thread, which has no user-space code to patch")
        }
    }

    /// `sh -c 'exec graft … -p $$ …'`: graft runs with the PID it is given.
    func graftOnItself(_ arguments: String, state: String) throws -> (status: Int32, stdout: String, stderr: String) {
        try runCommand("/bin/sh", ["-c", "exec '\(try graftBinary())' \(arguments) --state-dir '\(state)'"])
    }

    @Test func hookAndTraceRefuseGraftsOwnProcessAndSymbolsReadIt() throws {
        let state = temporaryDirectory()
        for arguments in ["hook -p $$ getpid --duration 0.1", "trace -p $$ --duration 0.1"] {
            let result = try graftOnItself(arguments, state: state)
            expectOneLineError(result, "graft cannot trace its own process")
            #expect(result.status == 1)
        }
        // Reading its own symbols is harmless and allowed.
        let symbols = try graftOnItself("symbols -p $$ 'libc:getpid'", state: state)
        #expect(symbols.status == 0, "\(symbols.stderr)")
        #expect(symbols.stdout.contains("getpid"))
    }

    /// The dry run refuses what the real run refuses (it reported "checks passed").
    @Test func patchDryRunRefusesGraftsOwnProcessLikeTheRealRun() throws {
        let state = temporaryDirectory()
        let real = try graftOnItself("patch -p $$ getpid --return 1", state: state)
        expectOneLineError(real, "graft cannot trace its own process")
        let dryRun = try graftOnItself("patch -p $$ getpid --return 1 --dry-run", state: state)
        expectOneLineError(dryRun, "graft cannot trace its own process")
        #expect(!dryRun.stdout.contains("checks passed"))
    }
}
