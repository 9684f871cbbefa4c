// graft-library-example PID: what `graft symbols`, `patch`, `list` and `unpatch` do, as GraftKit calls.
// Made for TestTargets' c_loop, which prints `a=1` (value_a) in a loop; value_b returns 2:
//   .build/victims/c_loop 100 &  .build/debug/graft-library-example $!
import GraftKit
import Glibc

func run(pid: Int32) throws {
    // The journal is the CLI's ($GRAFT_STATE_DIR, /run/graft for root, else $XDG_RUNTIME_DIR/graft),
    // so `graft list -p PID` sees these patches too.
    let graft = Graft()

    // Functions whose name matches a glob: runtime address, size, module!name.
    for function in try graft.symbols(pid: pid, matching: "value_*") {
        print("symbol \(hex(function.address)) \(function.symbol?.size ?? 0) \(function)")
    }

    // Every check that needs no stop; nothing is written (what `--dry-run` prints).
    let plan = try graft.preparePatch(pid: pid, location: "value_a", action: .jump(to: "value_b"))
    print("plan: \(plan.function) at \(hex(plan.address)): \(hexBytes(plan.originalBytes)) -> \(hexBytes(plan.newBytes)) (\(plan.encoding))")
    for check in plan.checks { print("  ok  \(check)") }

    // Apply: every thread stopped, checked again, written, recorded in the journal.
    let jump = try graft.patch(pid: pid, location: "value_a", action: .jump(to: "value_b"))
    print("patch \(jump.record!.id): value_a jumps to value_b; \(jump.threadCount) thread(s) stopped for \(jump.stopWindowNanoseconds / 1000) µs")
    usleep(500_000)  // the target now prints a=2

    // The journal, each entry checked against memory now: patch 1 is "applied".
    for status in try graft.list(pid: pid) {
        print("list: patch \(status.record.id) \(status.state.rawValue) \(status.record.function)")
    }

    // A refusal is a GraftError, thrown before anything is written.
    do {
        _ = try graft.patch(pid: pid, location: "value_a", action: .returnValue(7))
    } catch GraftError.alreadyPatched(address: _, id: let id, function: _, pid: _) {
        print("refused: value_a is already patched (patch \(id))")
    }

    // Undo the jump, then make value_a return 7 with a stub.
    for result in try graft.unpatch(pid: pid, ids: [jump.record!.id]) {
        print("unpatch \(result.record.id): \(result.outcome.rawValue)")
    }
    let stub = try graft.patch(pid: pid, location: "value_a", action: .returnValue(7))
    print("patch \(stub.record!.id): value_a returns 7 (\(hexBytes(stub.plan.newBytes)))")
    usleep(500_000)  // the target now prints a=7

    // Revert every applied patch; memory is written only where it still holds graft's bytes.
    for result in try graft.unpatch(pid: pid, ids: nil) {
        print("unpatch \(result.record.id): \(result.outcome.rawValue)")
        guard result.outcome == .reverted else { throw GraftError.usage(result.message ?? "not reverted") }
    }
}

guard CommandLine.arguments.count == 2, let pid = Int32(CommandLine.arguments[1]) else {
    print("usage: graft-library-example PID")
    exit(2)
}
do {
    try run(pid: pid)
} catch let error as GraftError {
    print("error: \(error)")
    _ = try? Graft().unpatch(pid: pid, ids: nil)  // leave the process as it was found
    exit(1)
}
