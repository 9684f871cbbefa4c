import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace

/// Hooks in a library the process has not loaded yet (`graft hook -p PID liblate:late_f` before the
/// program's `dlopen`): armed when the loader maps it. graft hears of every change of the link map
/// through the loader's `_dl_debug_state` (glibc's and musl's `r_brk`, the function debuggers break
/// on: ld.so calls it once the new objects are mapped, before their constructors run), with an int3
/// there like any hook's; each hit rereads the maps and arms the waiting hooks whose module appeared.
extension HookEngine {
    /// A hook's module is not mapped: it may wait, unless `--no-wait` or `--hardware` (whose registers
    /// are all given out when arming).
    func checkCanWait(for module: String, available: [String]) throws {
        guard waitsForLibraries, debugSlots == nil else {
            throw GraftError.moduleNotFound(name: module, available: available)
        }
    }

    /// The breakpoint on the loader's `_dl_debug_state`, written with the hooks by `arm`.
    func placeLoaderBreakpoint(contents: JournalContents) throws {
        let loader = index.modules.first { module in
            module.hasExecutableMapping && (try? module.elf())?.symbols(named: "_dl_debug_state").isEmpty == false
        }
        guard let loader else {
            let (hook, module) = waitingHooks[0]
            throw GraftError.usage("\(specs[hook].location): no module '\(module)' is mapped in process \(tracee.pid), and it has no dynamic loader that could map it later (a static program)")
        }
        let (breakpoint, function) = try plan(HookSpec(location: "\(loader.path):_dl_debug_state"), hook: 0, journal: contents)
        breakpoint.entryHook = nil
        try placeCopy(breakpoint, function: function, via: nil)
        breakpoints.insert(breakpoint)
        loaderBreakpoint = breakpoint
        for (hook, module) in waitingHooks {
            armNotices.append("\(module) is not loaded in process \(tracee.pid) yet: \(specs[hook].location) is hooked when the process loads it (dlopen); --no-wait refuses instead")
        }
    }

    /// The loader is at `_dl_debug_state` (thread `tid` stopped there): arm the waiting hooks whose
    /// module is mapped now. A module that appeared without the function (or with code graft cannot
    /// hook) is said in a notice and no longer waited for.
    func loaderStateChanged(_ tid: Int32, onEvent: (HookEvent) -> Void) {
        forgetUnloadedBreakpoints(onEvent: onEvent)
        guard !waitingHooks.isEmpty, let fresh = try? Graft.symbolIndex(pid: tracee.pid, journal: journal),
              Set(fresh.modules.map(\.path)) != Set(index.modules.map(\.path)),
              let contents = try? journal.load(ProcessInstance.current(tracee.pid)) else { return }
        index = fresh
        unwinder = RemoteUnwinder(index: fresh)
        var armedNow: [ArmedHook] = []
        waitingHooks = waitingHooks.filter { hook, module in
            do {
                let (breakpoint, function) = try plan(specs[hook], hook: hook, journal: contents)
                if let other = breakpoints[breakpoint.address] {
                    let name = other.entryHook.map { specs[$0].location } ?? "graft's loader breakpoint"
                    onEvent(.notice("\(specs[hook].location) is the address of \(name) (\(hex(breakpoint.address))): not hooked twice"))
                    return false
                }
                try placeCopy(breakpoint, function: function, via: tid)
                try tracee.writeMemory(at: breakpoint.address, bytes: [X86_64.int3])
                breakpoints.insert(breakpoint)
                if stats[hook].function != function {  // loaded again after a dlclose: the counts go on
                    stats[hook] = HookStatistics(location: specs[hook].location, function: function)
                }
                armedNow.append(armedHook(hook, breakpoint, function))
                return false
            } catch GraftError.moduleNotFound {
                return true  // not this library: still waiting
            } catch {
                onEvent(.notice("\(module) was loaded, but \(specs[hook].location) cannot be hooked: \(error)"))
                return false
            }
        }
        if !armedNow.isEmpty {
            armed += armedNow
            onEvent(.armed(armedNow))
        }
    }

    /// A dlclose: the breakpoints in code no longer mapped where they were are forgotten, never
    /// written again (the range may hold another library, or data, by the teardown), and their hooks
    /// wait for the library again, so a second dlopen is hooked too.
    func forgetUnloadedBreakpoints(onEvent: (HookEvent) -> Void) {
        for breakpoint in Array(breakpoints.all) where breakpoint !== loaderBreakpoint {
            // Unmapped (the read fails), or mapped again without graft's int3: not graft's any more
            // (unless the stepper took the int3 out for one step: it puts it back).
            if (try? tracee.readMemory(at: breakpoint.address, count: 1)) == [X86_64.int3] || stepper?.pendingRearm == breakpoint.address {
                continue
            }
            breakpoints.remove(at: breakpoint.address)
            for owner in pending.keys { pending[owner]?.removeAll { $0.returnAddress == breakpoint.address } }
            guard let hook = breakpoint.entryHook else { continue }
            let path = index.mapping(containing: breakpoint.address)?.path ?? hex(breakpoint.address)
            var module = path.split(separator: "/").last.map(String.init) ?? path
            if case .symbol(let named?, _)? = (try? Location.parse(specs[hook].location))?.base { module = named }
            armed.removeAll { $0.index == hook }
            waitingHooks.append((hook, module))
            onEvent(.notice("\(path) was unloaded: \(specs[hook].location) is hooked again if the process loads it again"))
        }
    }
}
