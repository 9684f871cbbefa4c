import GraftCore
import GraftELF
import GraftPtrace

/// The implementation an IFUNC resolves to in this process, and where graft learnt it.
struct IFUNCChoice {
    let address: UInt64
    /// Printed in the plan's checks and the hook's notice, after the implementation:
    /// `the loader's choice, read from libc.so.6's IRELATIVE slot`.
    let source: String

    /// glibc's own libraries (libc, libm, libmvec): their x86_64 resolvers only read the CPU
    /// features ld.so set up, take no lock and make no system call, so graft may run one on any
    /// thread wherever it stopped. Another library's resolver is never called.
    static func resolverIsSafeToCall(in module: LoadedModule) -> Bool {
        let name = module.name
        return ["libc.so.6", "libm.so.6", "libmvec.so.1"].contains(name)
    }
}

/// Calls an IFUNC's resolver inside the target with `hwcap` in rdi (as gdb does for
/// `gnu-indirect-function` symbols) and returns its answer. Given to `CodeSiteResolver` where a
/// thread of the target may run it: hook arming (every thread stopped), a patch's plan (one thread
/// borrowed, `Graft.callIFUNCResolver`).
typealias IFUNCResolverCall = (_ resolver: UInt64, _ hwcap: UInt64, _ function: String) throws -> UInt64

extension CodeSiteResolver {
    /// What the loader chose (or would choose) for an IFUNC in this process, in this order:
    ///
    /// 1. the module's `R_X86_64_IRELATIVE` slot whose addend is the resolver (the module's own calls
    ///    go through it; the loader fills it at start-up with the resolver's answer);
    /// 2. an IFUNC the vDSO implements (`time`, `gettimeofday`, `clock_gettime`, `clock_getres`,
    ///    `getcpu`: glibc's x86_64 resolvers return the vDSO's `__vdso_NAME` whenever the kernel
    ///    provides one, `dl_vdso_vsym`): that vDSO function;
    /// 3. a bound GOT slot of another module (`.rela.plt` JUMP_SLOT, `.rela.dyn` GLOB_DAT) naming the
    ///    symbol: the loader wrote the resolver's answer there (Debian's libc never calls `wcsncmp`
    ///    itself, so only its callers' slots hold it). A lazy slot not yet bound points into its own
    ///    module's PLT and is skipped; a slot bound into another module (an interposer) is not this
    ///    IFUNC's choice;
    /// 4. the resolver called in the process (`callResolver`), its answer checked to be executable
    ///    code of a loaded module: what ld.so would bind at the first call.
    ///
    /// Otherwise refused by name with what was tried (`GraftError.ifuncUnresolved`).
    func implementation(ofIFUNC symbol: ELFSymbol, in module: LoadedModule, function: String, use: String) throws -> IFUNCChoice {
        let resolver = module.runtimeAddress(symbol)
        let relocations = (try? module.elf().dynamicInfo().relocations) ?? []
        if let slot = relocations.first(where: { $0.type == 37 && UInt64(bitPattern: $0.addend) == symbol.value }),
           let bytes = try? readMemory(module.loadBias &+ slot.offset, 8) {
            let value = readLittleEndianUInt64(bytes, at: 0)
            if value != 0, value != resolver {
                return IFUNCChoice(address: value, source: "the loader's choice, read from \(module.name)'s IRELATIVE slot")
            }
        }
        if let vdso = index.modules.first(where: { $0.path == VDSO.mapsPath }), vdso !== module,
           let implementation = (try? vdso.elf())?.symbols(named: "__vdso_" + symbol.name).first {
            return IFUNCChoice(address: vdso.runtimeAddress(implementation), source: "the vDSO's: callers reach it without entering libc")
        }
        if let bound = boundGOTSlot(of: symbol, in: module, resolver: resolver) { return bound }
        var reason = "graft may not run code in the process here"
        if !IFUNCChoice.resolverIsSafeToCall(in: module) {
            // A resolver of another library may take a lock or make a system call; given up at its
            // timeout wherever the borrowed thread stood, it could leave the process wedged.
            reason = "graft calls only glibc's resolvers (they read the CPU features and nothing else), and \(module.name) is not glibc"
        } else if let callResolver {
            do {
                let hwcap = index.pid.flatMap { ProcFS.auxiliaryValue($0, type: 16) } ?? 0  // AT_HWCAP
                let chosen = try callResolver(resolver, hwcap, function)
                if let why = whyNotCode(chosen, resolver: resolver) {
                    reason = "its resolver returned \(hex(chosen)), \(why)"
                } else {
                    return IFUNCChoice(address: chosen, source: "no module has bound it yet: the answer of its resolver, called in the process")
                }
            } catch {
                reason = "\(error)"
            }
        }
        throw GraftError.ifuncUnresolved(function: function, use: use, reason: reason, pid: index.pid)
    }

    /// The first bound GOT slot for `symbol` in a module other than `module` whose value is code of
    /// `module` (or the vDSO) and not the resolver. Skipped when `module` defines the name at several
    /// addresses (`memcpy@GLIBC_2.2.5` and `memcpy@@GLIBC_2.14`): a slot does not say which version
    /// it imports here.
    func boundGOTSlot(of symbol: ELFSymbol, in module: LoadedModule, resolver: UInt64) -> IFUNCChoice? {
        guard let elf = try? module.elf(), !elf.symbols(named: symbol.name).contains(where: { $0.value != symbol.value }) else { return nil }
        for candidate in index.modules where candidate !== module && candidate.path != module.path && candidate.hasExecutableMapping {
            guard let relocations = try? candidate.elf().dynamicInfo().relocations else { continue }
            for relocation in relocations where relocation.isImportSlot(of: symbol.name) {
                let slot = candidate.loadBias &+ relocation.offset
                guard let bytes = try? readMemory(slot, 8) else { continue }
                let value = readLittleEndianUInt64(bytes, at: 0)
                // 0: not relocated yet; inside the importing module: its own PLT stub (lazy, unbound).
                guard value != 0, !candidate.contains(value), module.contains(value), whyNotCode(value, resolver: resolver) == nil else { continue }
                return IFUNCChoice(address: value, source: "the loader's choice, read from \(candidate.name)'s GOT, its \(relocation.typeName) slot at \(hex(slot))")
            }
        }
        return nil
    }

    /// Why `address` cannot be an IFUNC's implementation, or nil: it must be executable code of a
    /// loaded module (a file mapping or the vDSO), and not the resolver itself.
    func whyNotCode(_ address: UInt64, resolver: UInt64) -> String? {
        if address == resolver { return "the resolver itself" }
        guard let mapping = index.mapping(containing: address) else { return "which is not mapped" }
        guard mapping.executable, mapping.isFileBacked || mapping.path == VDSO.mapsPath, index.symbolize(address)?.module != nil else {
            return "which is not executable code of a loaded module (\(mapping.permissions) \(mapping.path.isEmpty ? "anonymous" : mapping.path))"
        }
        return nil
    }
}

extension Graft {
    /// Runs an IFUNC's resolver in process `pid` on one borrowed thread (asleep in a blocking call
    /// if one is, else the main thread), the others running on: glibc's x86_64 resolvers only read
    /// the CPU features ld.so set up at start-up, take no lock and make no system call, so any thread
    /// may run one wherever it stopped. Registers are put back (`Tracee.remoteCall`); nothing is
    /// written but the stack below the thread's red zone.
    func callIFUNCResolver(pid: Int32) -> IFUNCResolverCall {
        { resolver, hwcap, function in
            let thread = HijackThread.sleepingThread(pid: pid) ?? pid
            return try self.operationTracer.thread.run {
                if let signal = self.cancellation?() { throw GraftError.interrupted(signal: signal) }
                let tracee = try Tracee.attach(pid: pid, onlyThread: thread, tracer: self.operationTracer.thread)
                let chosen: UInt64
                do {
                    chosen = try tracee.remoteCall(resolver, [hwcap], name: "the resolver of \(function)", on: thread, timeout: 2)
                } catch {
                    let death = tracee.processDeath()
                    try? tracee.detach()
                    throw death ?? error
                }
                try tracee.detach()
                return chosen
            }
        }
    }
}
