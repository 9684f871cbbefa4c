import CGraftShim
import Glibc

/// `graft trace`: the stepped thread and graft's tracer thread on one CPU while it is stepped.
///
/// Every step is two wake-ups (PTRACE_SINGLESTEP wakes the thread, its trap wakes graft). On two
/// CPUs they ping-pong: the thread wakes on the idle CPU (an IPI to a halted vCPU, ~25–30 µs here),
/// and neither following its CPU nor graft's SCHED_IDLE trick (which co-locates hook sessions,
/// `CPUFollower`) keeps a thread that stops after every instruction beside its tracer: measured,
/// 9–10 k steps/s whatever graft did, 32 k with both confined to one CPU (the raw C loop alike).
/// So while a thread is stepped graft confines it to the CPU graft's tracer runs on, and puts its
/// own affinity mask back when the stepping ends (teardown, a `--function` call's return) — unless
/// the target changed it meanwhile (then the target's choice stays). Threads and processes the
/// stepped thread creates meanwhile inherit the narrow mask: they get the original one at once.
/// A thread already confined to one CPU, or a mask graft cannot set, is left as it is.
/// GRAFT_NO_AFFINITY_HOLD=1 turns it off. Killed by SIGKILL mid-trace, graft cannot put the mask
/// back: the thread keeps running, on one CPU (docs/safety.md).
struct AffinityHold {
    private(set) var thread: Int32 = 0
    private var cpu: Int32 = -1
    private var original = graft_cpu_mask()
    private(set) var isActive = false
    private let enabled = getenv("GRAFT_NO_AFFINITY_HOLD") == nil

    /// Confines `tid` (stopped) and the calling tracer thread to the CPU the tracer runs on.
    mutating func hold(_ tid: Int32) {
        guard enabled, !isActive, graft_get_affinity(tid, &original) == 0, graft_mask_count(&original) > 1 else { return }
        let here = graft_current_cpu()
        guard here >= 0, graft_mask_has(&original, here) == 1, graft_pin_current_thread(here) == 0,
              graft_pin_thread(tid, here) == 0 else { return }
        thread = tid
        cpu = here
        isActive = true
    }

    /// The stepping is over: the thread's own mask back, if it still has graft's.
    mutating func release() {
        guard isActive else { return }
        isActive = false
        if graft_thread_pinned_to(thread, cpu) == 1 { _ = graft_set_affinity(thread, &original) }
    }

    /// A thread or process created while the mask was held got graft's narrow mask: give it the
    /// original.
    func releaseChild(_ child: Int32) {
        guard isActive, graft_thread_pinned_to(child, cpu) == 1 else { return }
        var mask = original
        _ = graft_set_affinity(child, &mask)
    }
}
