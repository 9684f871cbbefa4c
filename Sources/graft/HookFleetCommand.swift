import ArgumentParser
import GraftCore
import GraftKit
import Glibc

/// `graft hook` on several processes (`-p 8153,8293`, `-n NAME`) or with `--follow`: one
/// `HookFleet`, a printer per process sharing one status line.
extension HookCommand {
    func runFleet() throws {
        var pids: [Int32] = []
        var seen: Set<Int32> = []
        for pid in pidArguments.flatMap(\.items).compactMap(\.value) where seen.insert(pid).inserted { pids.append(pid) }
        for name in names {
            let found = ProcessSet.named(name)
            if found.isEmpty {
                throw GraftError.usage("-n \(name): no process runs a program named \(name) (graft matches the executable's file name, or the comm `ps -o comm` shows)")
            }
            for pid in found where seen.insert(pid).inserted { pids.append(pid) }
        }
        var typed = HookSpec(location: "", argumentCount: argumentCount, backtrace: backtrace, returns: returns,
                             setReturn: setReturn, skip: skip)
        typed.raw = raw
        let template = typed
        let callFilter = try filter.map { try HookFilter(parsing: $0) }
        let journal = Journal(directory: stateDirectory)
        let graft = Graft(journal: journal)
        // Checked before any session starts: a LOCATION every process lacks is a usage error.
        for pid in pids {
            let specs = try graft.hookSpecs(pid: pid, locations: locations, template: template, maxHooks: maxHooks)
            if setReturn != nil && specs.count > 1 {
                throw GraftError.usage("--set-return applies to one function; the pattern matched \(specs.count)")
            }
        }
        let (locations, maxHooks) = (self.locations, self.maxHooks)
        let fleet = HookFleet(pids: pids, specs: { pid in try graft.hookSpecs(pid: pid, locations: locations, template: template, maxHooks: maxHooks) },
                              limits: HookLimits(count: count, duration: duration), journal: journal, follow: follow)
        fleet.reportsCalls = !quiet
        let (hardware, waits) = (self.hardware, !noWait)
        fleet.configure = { session in
            session.hardware = hardware
            session.waitsForLibraries = waits
            session.filter = callFilter
        }
        let status = StatusLine()
        let hold = HeldCall()  // one waiting call line over every process: lines stay in order
        fleet.holdsOutput = { hold.hit != nil }
        var printers: [Int32: HookPrinter] = [:]
        func printer(_ pid: Int32) -> HookPrinter {
            if let made = printers[pid] { return made }
            let made = HookPrinter(json: json, quiet: quiet, argumentCount: argumentCount, status: status, pid: pid, hold: hold)
            made.combinesReturns = returns || setReturn != nil
            made.hitsSoFar = { [fleet] in fleet.hitsSoFar }
            made.order = sort
            made.filtered = filter != nil
            made.ending = SessionEnding(count: count, duration: duration, pid: nil, unit: "call")
            printers[pid] = made
            return made
        }
        TerminationSignals.deferAll(holdStop: true, announceStop: true, session: true)
        let results = fleet.run(
            stopCheck: { TerminationSignals.sessionEnd.map { HookSessionEnd.signal($0) } },
            flush: { pid in printer(pid).flush() },
            onEvent: { pid, event in printer(pid).event(event) },
            onEnd: { pid, summary in printer(pid).summary(summary) })
        TerminationSignals.restoreDefaults()
        hold.release()  // a call line still waiting (its session ended by an error, not a summary)
        status.clear()
        var failed: [String] = []
        var signal: Int32?
        for (pid, result) in results {
            switch result {
            case .success(let summary):
                if !summary.codeRestored { failed.append("the code of process \(pid) could not be verified after removing the breakpoints") }
                if case .signal(let number) = summary.end { signal = number }
            case .failure(let error):
                if json {
                    Output.json(.object([("event", "error"), ("pid", .int(Int64(pid))), ("message", .string(error.description))]))
                } else {
                    Output.line("process \(pid): \(error.description)")
                }
                failed.append("process \(pid): \(error.description)")
            }
        }
        if failed.count == 1 { throw GraftError.usage(failed[0]) }
        if !failed.isEmpty { throw GraftError.usage("\(failed.count) of \(results.count) sessions failed (see above)") }
        if let signal { throw CommandFailed(code: 128 + signal) }
    }
}
