import CGraftShim
import Glibc

/// Keeps the tracer thread on the CPU where the hooked thread last ran.
///
/// A ptrace stop wakes the tracer, and PTRACE_CONT wakes the tracee: when the two sit on different
/// CPUs each hit pays two cross-CPU wake-ups (an IPI to an idle vCPU costs ~25–30 µs on these VMs,
/// design.md §4), when they share one both wake-ups are local and cheap. graft only moves its own
/// thread (sched_setaffinity on the tracer): the target's scheduling is untouched. The hooked thread's
/// CPU is read from /proc/PID/task/TID/stat (field 39) at most every 2 ms (GRAFT_CPU_FOLLOW_MS; 20 ms followed a migration 13% slower in the 1-thread unpinned hook benchmark). GRAFT_NO_CPU_FOLLOW=1
/// turns it off (benchmarks compare both).
struct CPUFollower {
    private var lastCheck: UInt64 = 0
    private var lastIdleCheck: UInt64 = 0
    private var pinned: Int32 = -1
    private let enabled = getenv("GRAFT_NO_CPU_FOLLOW") == nil
    private var idle = false
    private var observations: UInt = 0
    private var lastThread: Int32 = 0
    /// More than one thread hit since the last SCHED_IDLE decision.
    private var severalThreads = false
    /// The followed thread may run on more than one CPU (rechecked every 100 ms).
    private var movable = true
    /// One hooked thread that hits ≥ 2,000 times a second is held on the tracer's CPU, as `graft
    /// trace` holds a stepped thread (`AffinityHold`): SCHED_IDLE co-location still lets the two part
    /// now and then (other work lands on a CPU that runs only an idle-class thread first), and such
    /// a thread spends most of its time in graft's stops anyway. Released below 500 hits a second,
    /// when another thread hits, and at the session's end (its own mask back); threads and
    /// processes it creates meanwhile get the original mask at once. GRAFT_NO_AFFINITY_HOLD=1: off.
    private(set) var hold = AffinityHold()
    private var observationsAtDecision: UInt = 0

    /// The session ends (or the hold must go): the held thread gets its own mask back.
    mutating func releaseHold() { hold.release() }

    mutating func observe(process pid: Int32, thread tid: Int32) {
        guard enabled else { return }
        if tid != lastThread {
            if lastThread != 0 {
                severalThreads = true
                hold.release()
                // At once, not at the next decision: a starved tracer may not see one for seconds.
                if idle, graft_set_idle_policy(0) == 0 { idle = false }
            }
            lastThread = tid
        }
        // The clock itself is looked at every 8th hit: at tens of thousands of hits a second that
        // is still far more often than the 2 ms period.
        observations &+= 1
        guard observations & 7 == 0 else { return }
        let now = graft_monotonic_ns()
        guard now &- lastCheck > period else { return }
        lastCheck = now
        // SCHED_IDLE makes the tracer's CPU count as idle when the hooked thread wakes up, so the
        // scheduler puts it back on this CPU instead of waking the other (idle, halted) vCPU; the
        // tracer is preempted at once and runs again when the thread stops. Only while the machine
        // has spare CPUs: under load a SCHED_IDLE tracer would starve and stall the target.
        // Decided at most every 100 ms, over the last 100 ms (`hasSpareCPU`): at the 2 ms lookup
        // period, on an instant's reading, the policy flipped ~80 times a second.
        if now &- lastIdleCheck > 100_000_000 {
            let elapsed = now &- lastIdleCheck
            lastIdleCheck = now
            let rate = Double(observations &- observationsAtDecision) * 1e9 / Double(elapsed)
            observationsAtDecision = observations
            if hold.isActive {
                if severalThreads || rate < 500 || hold.thread != tid { hold.release() }
            } else if !severalThreads, rate >= 2_000 {
                hold.hold(tid)  // a thread already confined to one CPU is left as it is
            }
            // Only a thread the scheduler may place on several CPUs can be drawn to this one; for a
            // thread pinned to one CPU (taskset) SCHED_IDLE would only let every other task on that
            // CPU preempt graft — and attract them there, since it counts as idle.
            movable = graft_affinity_count(tid) > 1
            // Only while ONE thread hits: with several, most of them sit in their ptrace stop
            // waiting for graft, so the machine looks idle, yet once resumed they run — and an
            // idle-class tracer among running threads gets almost no CPU (seconds-long stalls were
            // seen with 8 hot threads on 2 CPUs).
            // The policy now: the watcher puts a starved idle-class tracer back in SCHED_OTHER.
            idle = graft_current_policy_is_idle() == 1
            let spare = movable && !severalThreads && hasSpareCPU() && !wasStarved(now, process: pid, thread: tid)
            severalThreads = false
            if spare != idle, graft_set_idle_policy(spare ? 1 : 0) == 0 { idle = spare }
        }
        guard movable, let cpu = Self.lastCPU(pid, tid), cpu != pinned else { return }
        if graft_pin_current_thread(cpu) == 0 { pinned = cpu }
    }

    static let cpuCount = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    /// How often the followed thread's CPU is looked up (a /proc read, a few µs). Read once per
    /// engine: a static would cost a swift_once check on every hit.
    private let period: UInt64 = UInt64(getenv("GRAFT_CPU_FOLLOW_MS").flatMap { Int(String(cString: $0)) } ?? 2) * 1_000_000

    private var idleHistory = IdleHistory()
    private var lastRunDelay: Int64 = -1
    private var lastTracedOnCPU: Int64 = -1
    private var starvedUntil: UInt64 = 0

    /// Since the last decision (~100 ms), the machine's CPUs were idle for at least half a CPU's
    /// time (`IdleHistory`). A history, not an instant: /proc/loadavg's running count, used before,
    /// caught a 10 Hz background poller (a script's `grep` + `sleep 0.1`) — and graft's own watcher
    /// reading it — in some samples and not in others, and the tracer flipped in and out of
    /// SCHED_IDLE with it. The first decision has no history: it waits for the next.
    mutating func hasSpareCPU() -> Bool {
        idleHistory.idleCPUs().map { $0 >= 0.5 } ?? false
    }

    /// Other work ran on the tracer's CPU for more than 2 ms of the last window (~100 ms): the time
    /// the tracer waited on a run queue, less the time the followed thread ran (co-located, the
    /// followed thread preempts the idle-class tracer by design, which is no starvation). A CPU
    /// that runs only an idle-class thread is where the kernel places new work first (a script's
    /// `grep` while another CPU sits idle); then the tracer stays in SCHED_OTHER for a second
    /// before trying SCHED_IDLE again.
    private mutating func wasStarved(_ now: UInt64, process pid: Int32, thread tid: Int32) -> Bool {
        var delay: Int64 = -1, unusedOnCPU: Int64 = 0, tracedOnCPU: Int64 = -1, unusedDelay: Int64 = 0
        if graft_thread_schedstat(getpid(), graft_gettid(), &unusedOnCPU, &delay) != 0 { delay = -1 }
        if graft_thread_schedstat(pid, tid, &tracedOnCPU, &unusedDelay) != 0 { tracedOnCPU = -1 }
        defer { lastRunDelay = delay; lastTracedOnCPU = tracedOnCPU }
        if lastRunDelay >= 0, delay >= 0, lastTracedOnCPU >= 0, tracedOnCPU >= 0,
           (delay &- lastRunDelay) &- (tracedOnCPU &- lastTracedOnCPU) > 2_000_000 {
            starvedUntil = now &+ 1_000_000_000
        }
        return now < starvedUntil
    }

    static func lastCPU(_ pid: Int32, _ tid: Int32) -> Int32? {
        let cpu = graft_thread_last_cpu(pid, tid)
        return cpu >= 0 ? cpu : nil
    }
}

/// How many CPUs' worth of time the machine spent idle since the last call (/proc/stat's first line:
/// idle + iowait over all jiffies, times the CPU count); nil on the first call or when unreadable.
struct IdleHistory {
    private var lastIdle: UInt64 = 0
    private var lastTotal: UInt64 = 0
    private let cpus = Double(CPUFollower.cpuCount)

    mutating func idleCPUs() -> Double? {
        var idle: UInt64 = 0, total: UInt64 = 0
        guard graft_cpu_jiffies(&idle, &total) == 0 else { return nil }
        defer { lastIdle = idle; lastTotal = total }
        guard lastTotal != 0, total > lastTotal else { return nil }
        return Double(idle &- lastIdle) / Double(total &- lastTotal) * cpus
    }
}
