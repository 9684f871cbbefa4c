import Foundation
import Glibc
import GraftELF
@testable import GraftKit
import GraftPtrace
import Testing
import TestSupport

/// New code in a running process (`Graft.inject`, `patch(library:)`): a library loaded on a fresh
/// thread of the target, a replacement that calls the original through a trampoline, threads moved
/// into it, unloading — on real victims, with exact effects.
@Suite struct InjectTests {
    static let corrected = "libfix: price(150) was -1500, corrected to 1500"

    func mapsText(_ pid: Int32) -> String { (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? "" }

    /// The issue's service: 8 threads call price(); the library's fixed_price logs, calls the
    /// original through graft_original_fixed_price and corrects its result; revert and unload.
    @Test func replacementLogsCallsTheOriginalAndRevertRestoresTheFile() throws {
        let victim = try Victim.launch("price_service", arguments: ["8"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasSuffix("price(7)=70 price(150)=-1500") })
        let library = try Victims.path("libfix.so")

        let outcome = try graft.patch(pid: victim.pid, location: "price", action: .jump(to: "fixed_price"), library: library)
        #expect(outcome.plan.library == library)
        #expect(outcome.plan.encoding.hasPrefix("jmp rel32"))
        let trampoline = try #require(outcome.trampoline)
        #expect(outcome.record?.trampoline == hex(trampoline.address))
        #expect(outcome.record?.originalPointerSymbol == "libfix.so!graft_original_fixed_price")
        expectLine(victim, { $0 == "libfix: loaded" }, "the library's constructor ran")
        expectLine(victim, { $0 == InjectTests.corrected }, "the replacement ran and logged")
        expectLine(victim, { $0.hasSuffix("price(7)=70 price(150)=1500") }, "the original's result, corrected")
        // graft_original_fixed_price holds the trampoline's address.
        let pointer = try #require(outcome.record?.originalPointer.flatMap { UInt64($0.dropFirst(2), radix: 16) })
        let word = try ProcessMemory.read(pid: victim.pid, at: pointer, count: 8)
        #expect(word == (0..<8).map { UInt8(truncatingIfNeeded: trampoline.address >> (8 * UInt64($0))) })
        let libraries = try graft.libraries(pid: victim.pid)
        #expect(libraries.map(\.state) == ["loaded"])
        #expect(libraries.first?.usedBy == [1])

        let results = try graft.unpatch(pid: victim.pid, ids: [1])
        #expect(results.map(\.outcome) == [.reverted])
        victim.drain()
        expectLine(victim, { $0.hasSuffix("price(150)=-1500") }, "reverted: the bug is back")
        let bytes = try functionBytes(pid: victim.pid, "price")
        #expect(bytes.memory == bytes.file)
        // The library stays loaded (unpatch of one patch) until --all / unloadLibraries.
        #expect(mapsText(victim.pid).contains(library))
        let unloads = try graft.unloadLibraries(pid: victim.pid)
        #expect(unloads.map(\.outcome) == [.unloaded], "\(unloads.map { $0.message ?? "" })")
        #expect(!mapsText(victim.pid).contains(library))
        #expect(victim.isAlive)
        #expect(!victim.transcript.contains { $0.hasPrefix("WRONG") })
    }

    /// 200 patch/unpatch/unload cycles (each one a dlopen and a dlclose on a loader thread) while 8
    /// threads call price(): the victim lives, every line is one of the two expected ones, and
    /// memory equals the file at the end.
    @Test func twoHundredCyclesUnderLoad() throws {
        let victim = try Victim.launch("price_service", arguments: ["8", "600"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasSuffix("price(150)=-1500") })
        let library = try Victims.path("libfix.so")
        var moved = 0, keptTrampolines = 0, refusedUnloads = 0
        for cycle in 0..<200 {
            do {
                let outcome = try graft.patch(pid: victim.pid, location: "price", action: .jump(to: "fixed_price"), library: library)
                moved += outcome.movedThreads.count
                let results = try graft.unpatch(pid: victim.pid, ids: [outcome.record!.id])
                #expect(results.map(\.outcome) == [.reverted], "cycle \(cycle)")
                if results.first?.trampolineNote?.hasPrefix("kept") == true { keptTrampolines += 1 }
                // A thread may be inside the replacement or its trampoline right then: the unload is
                // refused with the reason, and done a moment later.
                var unloads = try graft.unloadLibraries(pid: victim.pid)
                var tries = 1
                while unloads.contains(where: { $0.outcome == .kept }) && tries < 100 {
                    usleep(2_000)
                    unloads = try graft.unloadLibraries(pid: victim.pid)
                    tries += 1
                }
                refusedUnloads += tries - 1
                #expect(unloads.allSatisfy { $0.outcome == .unloaded }, "cycle \(cycle): \(unloads.map { $0.message ?? "" })")
            } catch {
                let status = victim.waitExit(timeout: 1).map(WaitStatus.describe) ?? "still running"
                Issue.record("cycle \(cycle): \(error); victim: \(status), last lines \(victim.transcript.suffix(4)), stderr \(victim.stderrOutput)")
                return
            }
        }
        // Trampolines kept at a revert are freed by a later unpatch or list.
        _ = try graft.list(pid: victim.pid)
        let contents = try graft.journal.load(try ProcessInstance.current(victim.pid))
        #expect(contents.patches.allSatisfy { $0.trampolineState == "freed" }, "every trampoline freed in the end")
        #expect(contents.libraries?.allSatisfy { $0.state == .unloaded } == true)
        victim.drain()
        expectLine(victim, { $0.hasSuffix("price(150)=-1500") })
        #expect(victim.isAlive)
        let unexpected = victim.transcript.filter {
            !($0 == "ready" || $0 == "libfix: loaded" || $0 == InjectTests.corrected
              || ($0.hasPrefix("tick ") && ($0.hasSuffix("price(7)=70 price(150)=-1500") || $0.hasSuffix("price(7)=70 price(150)=1500"))))
        }
        #expect(unexpected.isEmpty, "unexpected output: \(unexpected.prefix(5))")
        let bytes = try functionBytes(pid: victim.pid, "price")
        #expect(bytes.memory == bytes.file)
        #expect(!mapsText(victim.pid).contains(library))
        print("inject cycles: 200, threads moved into trampolines \(moved) times, trampolines kept at a revert \(keptTrampolines) times, unloads refused (in use) and retried \(refusedUnloads) times")
    }

    /// Every form the relocator rewrites, live: each replacement returns the original's result
    /// (through its trampoline) + 1000.
    @Test func relocatedHeadsReturnWhatTheUntouchedFunctionsReturn() throws {
        let victim = try Victim.launch("relocate_heads")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        let untouched = "heads 47 12 10 8 9 10 15 -1"
        expectLine(victim, { $0 == untouched })
        let library = try Victims.path("librelocate.so")
        let names = ["h_rip_load", "h_rip_lea", "h_jcc", "h_jmp8", "h_jmp32", "h_call", "h_endbr"]
        for name in names {
            let outcome = try graft.patch(pid: victim.pid, location: name, action: .jump(to: "r_\(name)"), library: library)
            #expect(outcome.trampoline != nil, "\(name)")
            if name == "h_endbr" { #expect(outcome.plan.keptEndbr64) }
        }
        expectLine(victim, { $0 == "heads 1047 1012 1010 1008 1009 1010 1015 999" }, "each original through its trampoline, + 1000")
        let results = try graft.unpatch(pid: victim.pid, ids: nil)
        #expect(results.map(\.outcome) == Array(repeating: .reverted, count: names.count))
        victim.drain()
        expectLine(victim, { $0 == untouched })
        for name in names {
            let bytes = try functionBytes(pid: victim.pid, name)
            #expect(bytes.memory == bytes.file, "\(name)")
        }
    }

    /// A graft_original_ symbol that is not a writable pointer is refused by name; nothing written.
    @Test func originalSymbolThatIsNotAPointerIsRefused() throws {
        let victim = try Victim.launch("relocate_heads")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasPrefix("heads ") })
        expectError({ "\($0)".contains("librelocate.so!graft_original_r_const is an object of 4 bytes, not a pointer") }) {
            _ = try graft.patch(pid: victim.pid, location: "h_rip_load", action: .jump(to: "r_const"), library: try Victims.path("librelocate.so"))
        }
        let bytes = try functionBytes(pid: victim.pid, "h_rip_load")
        #expect(bytes.memory == bytes.file)
        #expect(try graft.list(pid: victim.pid).isEmpty)
    }

    /// A worker thread single-stepped into price()'s overwritten bytes when graft stops the process
    /// is moved to the matching instruction of the trampoline and finishes its call correctly (the
    /// worker checks every result and prints WRONG otherwise).
    @Test func threadParkedInsideTheOverwrittenBytesIsMoved() throws {
        let victim = try Victim.launch("price_service", arguments: ["2"])
        defer { victim.kill() }
        var graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasSuffix("price(150)=-1500") })
        let library = try Victims.path("libfix.so")
        _ = try graft.inject(pid: victim.pid, path: library)
        let price = try SymbolIndex(pid: victim.pid).resolve(try Location.parse("price")).address
        let parked = Parked()
        graft.insideStopWindow = { tracee in
            guard parked.take() else { return }
            for tid in tracee.threadIDs where tid != tracee.pid {
                var steps = 0
                while steps < 200_000, let pc = try? tracee.programCounter(of: tid) {
                    if pc > price && pc < price + 5 { parked.set(tid); return }
                    _ = try? tracee.singleStep(tid)
                    steps += 1
                }
            }
        }
        let outcome = try graft.patch(pid: victim.pid, location: "price", action: .jump(to: "fixed_price"), library: library)
        let tid = try #require(parked.tid, "a worker was stepped into price's first 5 bytes")
        #expect(outcome.movedThreads.contains(tid))
        expectLine(victim, { $0.hasSuffix("price(150)=1500") })
        Thread.sleep(forTimeInterval: 0.2)
        #expect(victim.isAlive)
        #expect(!victim.transcript.contains { $0.hasPrefix("WRONG") }, "the moved worker got price() right")
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        _ = try graft.unloadLibraries(pid: victim.pid)
    }

    /// dlopen while the thread graft borrows is stopped inside malloc (one arena shared by 9
    /// allocating threads): graft steps it out of the C library before it calls pthread_create, the
    /// load runs on a new thread with the others running — no deadlock.
    @Test func loadWhileTheBorrowedThreadIsInsideMalloc() throws {
        let victim = try Victim.launch("malloc_storm", arguments: ["8"], environment: ["MALLOC_ARENA_MAX": "1"])
        defer { victim.kill() }
        var graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasPrefix("allocs ") })
        let malloc = try SymbolIndex(pid: victim.pid).resolve(try Location.parse("libc:malloc"))
        let mallocRange = malloc.address..<(malloc.address + (malloc.symbol?.size ?? 1))
        let libc = try SymbolIndex(pid: victim.pid).module(named: "libc")
        let insideMalloc = Parked()
        graft.insideHijackWindow = { tracee, thread in
            guard insideMalloc.take() else { return }
            // Into malloc, then on into what it calls with the arena lock held (_int_malloc).
            var entered = false
            for _ in 0..<500_000 {
                guard let pc = try? tracee.programCounter(of: thread) else { return }
                if mallocRange.contains(pc) { entered = true } else if entered && libc.contains(pc) { insideMalloc.set(thread); return }
                _ = try? tracee.singleStep(thread)
            }
        }
        let outcome = try graft.inject(pid: victim.pid, path: try Victims.path("libfix.so"))
        #expect(insideMalloc.tid != nil, "the borrowed thread was stepped into malloc's callee")
        #expect(outcome.hijackSteps > 0, "graft stepped it out of the C library first")
        #expect(outcome.loaderThread != nil)
        expectLine(victim, { $0 == "libfix: loaded" })
        victim.drain()
        expectLine(victim, { $0.hasPrefix("allocs ") }, "the allocating threads go on")
        #expect(victim.isAlive)
        #expect(try graft.unloadLibraries(pid: victim.pid).map(\.outcome) == [.unloaded])
    }

    /// Libraries the loader refuses: its message, nothing recorded, no mapping of them left.
    @Test(arguments: [("libmissingdep.so", "libgraft_gone.so: cannot open shared object file: No such file or directory"),
                      ("libunresolved.so", "undefined symbol: graft_no_such_function")])
    func loaderRefusalIsReportedWithItsMessage(library: String, message: String) throws {
        let victim = try Victim.launch("price_service", arguments: ["2"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasPrefix("tick ") })
        let path = try Victims.path(library)
        expectError({ error in
            guard case .libraryLoadFailed(let failed, let pid, let text) = error else { return false }
            return failed == path && pid == victim.pid && text.contains(message)
        }) {
            _ = try graft.inject(pid: victim.pid, path: path)
        }
        #expect(!mapsText(victim.pid).contains(library))
        #expect(try graft.libraries(pid: victim.pid).isEmpty)
        #expect(victim.isAlive)
    }

    /// A library for another architecture is refused before anything is written.
    @Test func libraryForAnotherArchitectureIsRefused() throws {
        let victim = try Victim.launch("price_service", arguments: ["1"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasPrefix("tick ") })
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: try Victims.path("libfix.so"))))
        bytes[18] = 183; bytes[19] = 0  // e_machine = EM_AARCH64
        let path = NSTemporaryDirectory() + "libfix-aarch64-\(getpid()).so"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let before = mapsText(victim.pid)
        expectError({ "\($0)".contains("it is built for AArch64, and process \(victim.pid) runs x86_64 code") }) {
            _ = try graft.inject(pid: victim.pid, path: path)
        }
        #expect(mapsText(victim.pid) == before)
    }

    /// A seccomp filter that would kill the process on the loader's mmap(PROT_EXEC) is read first
    /// and the load refused by name; the process lives.
    @Test func seccompFilterThatWouldKillTheLoadIsRefused() throws {
        let victim = try Victim.launch("hook_seccomp", arguments: ["kill", "100", "120"], stdin: true)
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectError({ "\($0)".contains("loading it makes the system call mmap, and the seccomp filter of process \(victim.pid) would kill the process") }) {
            _ = try graft.inject(pid: victim.pid, path: try Victims.path("libfix.so"))
        }
        #expect(victim.isAlive)
    }

    /// A library whose own thread runs in it is not unloaded; the reason names the thread.
    @Test func libraryInUseIsNotUnloaded() throws {
        let victim = try Victim.launch("price_service", arguments: ["1"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasPrefix("tick ") })
        let path = try Victims.path("libbusy.so")
        let outcome = try graft.inject(pid: victim.pid, path: path)
        #expect(!outcome.alreadyLoaded)
        #expect(try graft.inject(pid: victim.pid, path: path).alreadyLoaded, "loaded once per process instance")
        let unloads = try graft.unloadLibraries(pid: victim.pid)
        #expect(unloads.map(\.outcome) == [.kept])
        #expect(unloads.first?.message?.contains("thread") == true, "\(unloads.first?.message ?? "")")
        #expect(mapsText(victim.pid).contains(path))
        #expect(try graft.libraries(pid: victim.pid).map(\.state) == ["loaded"])
    }

    /// A static C program and a Go program have no dynamic loader: graft maps the -nostdlib
    /// library itself, and the replacement calls the original through its trampoline.
    @Test(arguments: [("static_loop", "price", "nostd_fixed_price", "price=130", "price=131"),
                      ("go_loop", "main.a", "nostd_go_a", "a=1", "a=41")])
    func targetWithoutALoaderGetsNewCodeThatCallsTheOriginal(victimName: String, function: String, replacement: String,
                                                             before: String, after: String) throws {
        let victim = try Victim.launch(victimName)
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0 == before })
        let library = try Victims.path("libnostd.so")
        let outcome = try graft.patch(pid: victim.pid, location: function, action: .jump(to: replacement), library: library)
        #expect(outcome.trampoline != nil)
        expectLine(victim, { $0 == after })
        let libraries = try graft.libraries(pid: victim.pid)
        #expect(libraries.map(\.record.loader) == ["graft"])
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        victim.drain()
        expectLine(victim, { $0 == before })
        let bytes = try functionBytes(pid: victim.pid, function)
        #expect(bytes.memory == bytes.file)
        #expect(try graft.unloadLibraries(pid: victim.pid).map(\.outcome) == [.unloaded])
        #expect(victim.isAlive)
    }

    /// musl: dlopen, dlerror and pthread_create are in its one libc (also its loader); the fix runs
    /// and calls the original; musl's dlclose unloads nothing, and graft says so.
    @Test func muslProgramGetsTheLibraryAndTheReplacementCallsTheOriginal() throws {
        let victim = try Victim.launch("price_service_musl", arguments: ["4"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasSuffix("price(150)=-1500") })
        let library = try Victims.path("libfix_musl.so")
        let outcome = try graft.patch(pid: victim.pid, location: "price", action: .jump(to: "fixed_price"), library: library)
        #expect(outcome.trampoline != nil)
        expectLine(victim, { $0 == "libfix: loaded" })
        expectLine(victim, { $0.hasSuffix("price(7)=70 price(150)=1500") })
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        victim.drain()
        expectLine(victim, { $0.hasSuffix("price(150)=-1500") })
        var unloads = try graft.unloadLibraries(pid: victim.pid)
        for _ in 0..<50 where unloads.first?.message?.contains("musl") != true {
            usleep(2_000)
            unloads = try graft.unloadLibraries(pid: victim.pid)
        }
        #expect(unloads.map(\.outcome) == [.kept])
        #expect(unloads.first?.message?.contains("musl never unloads a library") == true, "\(unloads.first?.message ?? "")")
        #expect(!victim.transcript.contains { $0.hasPrefix("WRONG") })
    }

    /// The target runs in another mount namespace where the library's folder is an empty tmpfs:
    /// graft hands the very file over through a memfd; its symbols are LOCATIONs as usual.
    @Test func targetInAnotherMountNamespaceGetsTheFileThroughAMemfd() throws {
        let folder = NSTemporaryDirectory() + "graft-ns-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(folder, 0o755)
        defer { unlink(folder + "/libfix.so"); rmdir(folder) }
        let library = folder + "/libfix.so"
        try Data(contentsOf: URL(fileURLWithPath: try Victims.path("libfix.so"))).write(to: URL(fileURLWithPath: library))
        let service = try Victims.path("price_service")
        let victim = try Victim.launchCommand("/usr/bin/unshare", arguments: [
            "--mount", "--propagation", "private", "/bin/sh", "-c", "mount -t tmpfs none '\(folder)' && exec '\(service)' 2"])
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0.hasSuffix("price(150)=-1500") })
        #expect(access("/proc/\(victim.pid)/root\(library)", F_OK) != 0, "the target does not see the file")
        let outcome = try graft.inject(pid: victim.pid, path: library)
        #expect(outcome.viaMemfd)
        #expect(outcome.record.mappedAs == "/memfd:libfix.so")
        expectLine(victim, { $0 == "libfix: loaded" })
        _ = try graft.patch(pid: victim.pid, location: "price", action: .jump(to: "fixed_price"), library: library)
        expectLine(victim, { $0.hasSuffix("price(150)=1500") })
        _ = try graft.unpatch(pid: victim.pid, ids: nil)
        #expect(try graft.unloadLibraries(pid: victim.pid).map(\.outcome) == [.unloaded])
        #expect(!mapsText(victim.pid).contains("memfd:libfix.so"))
    }

    /// The loader thread's start routine in LoaderThread.swift is TestTargets/loader_stub.S, assembled.
    @Test func loaderStubBytesAreTheAssembledSource() throws {
        let source = Victims.packageRoot + "/TestTargets/loader_stub.S"
        let object = NSTemporaryDirectory() + "loader_stub-\(getpid()).o"
        let binary = object + ".bin"
        defer { unlink(object); unlink(binary) }
        #expect(try runCommand("/usr/bin/as", ["-o", object, source]).status == 0)
        #expect(try runCommand("/usr/bin/objcopy", ["-O", "binary", "-j", ".text", object, binary]).status == 0)
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: binary)))
        #expect(bytes == LoaderThread.stub)
    }
}

/// A value a stop-window hook sets once (tests only).
final class Parked: @unchecked Sendable {
    private let lock = NSLock()
    private var used = false
    private var value: Int32?
    /// True the first time only.
    func take() -> Bool { lock.withLock { defer { used = true }; return !used } }
    func set(_ tid: Int32) { lock.withLock { value = tid } }
    var tid: Int32? { lock.withLock { value } }
}
