import GraftMachine
import GraftPtrace

/// Every int3 graft placed in the target, by address: what the hit path looks up on each stop, what
/// the stepper decodes around, what teardown puts back.
final class BreakpointTable {
    private var byAddress: [UInt64: Breakpoint] = [:]

    /// The breakpoint at `address` (the int3's own address, so a trap's rip - 1).
    subscript(address: UInt64) -> Breakpoint? {
        byAddress[address]
    }

    var isEmpty: Bool { byAddress.isEmpty }
    var all: Dictionary<UInt64, Breakpoint>.Values { byAddress.values }

    func insert(_ breakpoint: Breakpoint) {
        byAddress[breakpoint.address] = breakpoint
    }

    /// Forgets one breakpoint without writing (its code was unmapped: a dlclose).
    func remove(at address: UInt64) { byAddress[address] = nil }

    /// Forgets every breakpoint (after exec the code is new; after `restoreAll` it is back).
    func removeAll() { byAddress.removeAll() }

    /// `bytes`, read from memory at `address`, with graft's int3s replaced by the bytes they hide.
    func putOriginalBytes(in bytes: inout [UInt8], at address: UInt64) {
        for (offset, byte) in bytes.enumerated() where byte == X86_64.int3 {
            if let breakpoint = byAddress[address &+ UInt64(offset)] { bytes[offset] = breakpoint.originalByte }
        }
    }

    /// Writes an int3 at every breakpoint.
    func writeAll(to tracee: Tracee) throws {
        for breakpoint in byAddress.values {
            try tracee.writeMemory(at: breakpoint.address, bytes: [X86_64.int3])
        }
    }

    /// Puts every original byte back (reading back each instruction) and forgets the breakpoints;
    /// true when memory matches.
    @discardableResult
    func restoreAll(in tracee: Tracee) -> Bool {
        var ok = true
        for breakpoint in byAddress.values {
            // Unmapped, or no int3 there any more (a dlclose'd library; other code or data mapped at
            // its address): nothing of graft's is left, and the old byte must not be written.
            guard let current = try? tracee.readMemory(at: breakpoint.address, count: 1),
                  current == [X86_64.int3] || current == [breakpoint.originalByte] else { continue }
            do {
                try tracee.writeMemory(at: breakpoint.address, bytes: [breakpoint.originalByte])
                let back = try tracee.readMemory(at: breakpoint.address, count: breakpoint.instruction.size)
                if back != breakpoint.instruction.bytes { ok = false }
            } catch {
                ok = false
            }
        }
        byAddress.removeAll()
        return ok
    }

    /// A fork child inherits the int3 bytes: put the original ones back in its copy of the memory.
    func restoreAll(inForkChild child: Int32, of tracee: Tracee) {
        for breakpoint in byAddress.values {
            try? tracee.writeText(process: child, at: breakpoint.address, bytes: [breakpoint.originalByte])
        }
    }
}
