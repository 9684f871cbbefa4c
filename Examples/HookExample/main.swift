// graft-hook-example PID: what `graft hook` does, as GraftKit calls: hook value_a, print each call
// and each return, make it return 5, end after 6 calls, remove the breakpoints, print the summary.
// Made for TestTargets' c_loop, which prints `a=1` (value_a) in a loop; it prints a=5 meanwhile:
//   .build/victims/c_loop 100 &  .build/debug/graft-hook-example $!
import GraftKit
import Glibc

func run(pid: Int32) throws {
    // One HookSpec per function: what to report (integer arguments, return value, a backtrace) and
    // whether to change the result (`setReturn`, with `skip` to not run the function at all).
    let specs = [HookSpec(location: "value_a", argumentCount: 1, returns: true, setReturn: 5)]
    // The session ends after 6 calls in all, 10 seconds, `requestStop()` from another thread, or
    // the target's exit, whichever comes first.
    let session = HookSession(pid: pid, specs: specs, limits: HookLimits(count: 6, duration: 10))
    // `run` blocks: it attaches, arms, and calls `onEvent` on its tracer thread for every event.
    let summary = try session.run(onEvent: { event in
        switch event {
        case .armed(let hooks):
            for hook in hooks { print("armed \(hook.function) at \(hex(hook.address)) (\(hook.strategy))") }
        case .hit(let hit):
            print("call \(hit.location) tid \(hit.tid) rdi=\(hit.arguments.map { hex($0) }.joined())")
        case .returned(let value):
            print("return \(value.location) = \(value.returnedValue) (the function computed \(value.value))")
        default:
            break  // notices (a fork child released, an exec) and trace-mode events
        }
    })
    // Every breakpoint is out and the code verified equal to what it was before the session.
    for hook in summary.hooks { print("summary \(hook.function): \(hook.hits) calls") }
    print("ended by \(summary.end), code restored: \(summary.codeRestored)")
}

guard CommandLine.arguments.count == 2, let pid = Int32(CommandLine.arguments[1]) else {
    print("usage: graft-hook-example PID")
    exit(2)
}
do {
    try run(pid: pid)
} catch let error as GraftError {
    print("error: \(error)")  // nothing is left armed: the session removes its breakpoints first
    exit(1)
}
