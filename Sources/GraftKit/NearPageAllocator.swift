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
        let module = index.module(containing: address)
        let low = module?.mappings.first?.start ?? (address & ~0xfff)
        let high = module?.mappings.last?.end ?? ((address + 0x1000) & ~0xfff)
        return try Self.mapPage(near: low..<high, protection: protection, tracee: tracee, via: tid,
                                purpose: "graft's out-of-line copies", address: address)
    }

    /// A new anonymous page within reach of all of `range` (a module): candidates 1 MiB apart below
    /// it, then above it, up to 64 MiB away. `purpose` names the page in the refusal.
    static func mapPage(near range: Range<UInt64>, protection: Int32, tracee: Tracee, via tid: Int32?, purpose: String,
                        address: UInt64? = nil) throws -> UInt64 {
        let flags: Int32 = 0x02 | 0x20 | 0x100000  // MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
        let low = range.lowerBound & ~0xfff, high = (range.upperBound + 0xfff) & ~0xfff
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
        let at = address ?? range.lowerBound
        throw GraftError.hookRefused(function: hex(at), address: at, reason: "no free page within ±64 MiB for \(purpose)")
    }

    func unmapPage(_ base: UInt64) throws {
        try tracee.remoteMunmap(address: base, length: Self.pageSize)
    }
}
