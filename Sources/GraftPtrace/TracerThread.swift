import CGraftShim
import GraftCore
import Glibc

/// The one thread that talks to the kernel for a tracee.
///
/// ptrace belongs to the *thread* that attached (the kernel records the tracer task, not the process):
/// every ptrace, waitpid and libunwind call for a tracee must come from the same OS thread. Swift's
/// default actors, DispatchQueues and `@MainActor` do not keep one thread on Linux, so graft runs a
/// plain pthread with a job queue (Delve's `execPtraceFunc`). `run` is reentrant: code already on the
/// tracer thread runs inline, so a whole operation can be batched into one hop (~10 µs each).
public final class TracerThread: @unchecked Sendable {
    /// Guards `jobs` and `stopping`; its condition wakes the loop.
    private let lock = ConditionLock()
    private var jobs: [Job] = []
    private var stopping = false
    private var thread: pthread_t?
    /// Kernel thread id of the tracer thread (valid once started).
    public private(set) var kernelThreadID: Int32 = 0

    public init(name: String = "graft-tracer") {
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        let rc = pthread_create(&handle, nil, { raw in
            let me = Unmanaged<TracerThread>.fromOpaque(raw!).takeRetainedValue()
            me.loop()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            thread = nil
        } else {
            thread = handle
            // Wait until the thread has recorded its tid so `isCurrent` is reliable at once.
            _ = try? run { 0 }
        }
    }

    /// True when the caller is running on this tracer thread.
    /// pthread_self is a register read; gettid would be a system call on every ptrace wrapper.
    public var isCurrent: Bool {
        guard let thread else { return false }
        return pthread_self() == thread  // pthread_t is the thread's address on Linux: no libc call to compare
    }

    /// Runs `body` on the tracer thread and returns its result; the caller blocks meanwhile.
    public func run<T>(_ body: () throws -> T) throws -> T {
        if isCurrent { return try body() }
        guard thread != nil else {
            throw GraftErrorBox.tracerThreadUnavailable
        }
        var result: Result<T, any Error>?
        let completion = Completion()
        withoutActuallyEscaping(body) { escapable in
            withUnsafeMutablePointer(to: &result) { resultPointer in
                // The queued closure captures `escapable`; the loop releases it *before* signalling
                // completion, so nothing holds it once this block ends (withoutActuallyEscaping checks).
                let job = Job(work: { resultPointer.pointee = Result { try escapable() } }, completion: completion)
                lock.lock()
                jobs.append(job)
                lock.signal()
                lock.unlock()
            }
            completion.wait()
        }
        return try result!.get()
    }

    /// Lets the thread finish its queue and exit. Further `run` calls throw.
    public func shutdown() {
        lock.lock()
        stopping = true
        lock.signal()
        lock.unlock()
        if let handle = thread, !isCurrent {
            pthread_join(handle, nil)
        }
        thread = nil
    }

    /// Interrupts a blocking `Tracee.waitForEvent` on this thread (it returns nil), from any thread.
    /// A wake that lands just before the wait starts is lost, so callers repeat it until heard.
    public func wake() {
        if kernelThreadID != 0 { _ = graft_wake_thread(kernelThreadID) }
    }

    private func loop() {
        kernelThreadID = graft_gettid()
        // A thread's first malloc makes glibc set up an arena for it (~50 µs): pay that now, not in
        // the middle of a stop window.
        free(malloc(4096))
        _ = graft_install_wake_handler()
        graft_unblock_wake_signal()
        while true {
            lock.lock()
            while jobs.isEmpty && !stopping {
                lock.wait()
            }
            if jobs.isEmpty && stopping {
                lock.unlock()
                return
            }
            var job: Job? = jobs.removeFirst()
            lock.unlock()
            let completion = job!.completion
            job!.work()
            job = nil
            completion.signal()
        }
    }
}

private struct Job {
    let work: () -> Void
    let completion: Completion
}

/// A one-shot signal from the tracer thread to the waiting caller.
private final class Completion: @unchecked Sendable {
    private let lock = ConditionLock()
    private var done = false

    func signal() {
        lock.lock()
        done = true
        lock.signal()
        lock.unlock()
    }

    func wait() {
        lock.lock()
        while !done { lock.wait() }
        lock.unlock()
    }
}

import GraftCore

enum GraftErrorBox {
    static var tracerThreadUnavailable: GraftError {
        .systemCall(name: "pthread_create", errno: EAGAIN, context: "the tracer thread")
    }
}
