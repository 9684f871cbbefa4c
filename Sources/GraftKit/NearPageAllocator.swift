import GraftCore
import GraftELF
import GraftPtrace
import Glibc

/// Maps pages into the target *near* an address: within ±2 GiB, so rip-relative operands of a copied
/// instruction and `jmp rel32` back to the code still reach. Out-of-line copies use it today;
/// trampolines and far-library islands are the next users.
///
/// A remote `mmap` (`Tracee.remoteSyscall`, which asks the thread's seccomp filters first) with
/// MAP_FIXED_NOREPLACE at candidates 1 MiB apart, below the address's module, then above it, up to
/// 64 MiB away (funchook and frida walk the free ranges the same way).
struct NearPageAllocator {
    static let pageSize: UInt64 = 4096
    let tracee: Tracee
    let index: SymbolIndex

    /// A new anonymous page near `address` with `protection` (default r-x), mapped by thread `tid`
    /// (nil: any thread that can make a remote call).
    func mapPage(near address: UInt64, protection: Int32 = 0x1 | 0x4, via tid: Int32?) throws -> UInt64 {
        let flags: Int32 = 0x02 | 0x20 | 0x100000  // MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
        let module = index.module(containing: address)
        let low = module?.mappings.first?.start ?? (address & ~0xfff)
        let high = module?.mappings.last?.end ?? ((address + 0x1000) & ~0xfff)
        var candidates: [UInt64] = []
        for step in 1...64 {
            let distance = UInt64(step) * 0x10_0000  // 1 MiB steps
            if low > distance { candidates.append(low - distance) }
            candidates.append(high + distance)
        }
        let thread = try tid ?? tracee.threadForRemoteCall()
        for candidate in candidates {
            let mapped: UInt64
            do {
                mapped = try tracee.remoteSyscall(9, [candidate, Self.pageSize, UInt64(protection), UInt64(UInt32(bitPattern: flags)), UInt64.max, 0], name: "mmap", on: thread)
            } catch GraftError.remoteSyscallFailed(_, let code) where code == EEXIST {
                continue  // something is mapped there: the next candidate
            }
            if mapped == candidate { return mapped }
            // A kernel without MAP_FIXED_NOREPLACE (before 4.17) took the address as a hint.
            try? tracee.remoteMunmap(address: mapped, length: Self.pageSize)
        }
        throw GraftError.hookRefused(function: hex(address), address: address, reason: "no free page within ±64 MiB for graft's out-of-line copies")
    }

    func unmapPage(_ base: UInt64) throws {
        try tracee.remoteMunmap(address: base, length: Self.pageSize)
    }
}
