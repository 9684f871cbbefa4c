import GraftCore
import GraftMachine

/// The pages graft maps into the target for out-of-line copies of displaced instructions, 32 bytes
/// a slot (a copy plus its jump back), each page near the code it serves (`NearPageAllocator`).
final class ScratchPages {
    static let pageSize = NearPageAllocator.pageSize
    static let slotSize: UInt64 = 32
    private(set) var pages: [(base: UInt64, used: UInt64)] = []
    private let allocator: NearPageAllocator

    init(allocator: NearPageAllocator) {
        self.allocator = allocator
    }

    var isEmpty: Bool { pages.isEmpty }

    func contains(_ address: UInt64) -> Bool {
        pages.contains { address >= $0.base && address < $0.base + Self.pageSize }
    }

    /// Writes an out-of-line copy of `instruction` into a free slot (of a page within reach, or a new
    /// one mapped by thread `tid`) and returns the slot's address.
    func place(_ instruction: Instruction, via tid: Int32?) throws -> UInt64 {
        let tracee = allocator.tracee
        for i in pages.indices where pages[i].used + Self.slotSize <= Self.pageSize {
            let slot = pages[i].base + pages[i].used
            if let copy = X86DisplacedInstruction.outOfLineCopy(of: instruction, at: slot) {
                try tracee.writeMemory(at: slot, bytes: copy)
                pages[i].used += Self.slotSize
                return slot
            }
        }
        let base = try allocator.mapPage(near: instruction.address, via: tid)
        pages.append((base, 0))
        guard let copy = X86DisplacedInstruction.outOfLineCopy(of: instruction, at: base) else {
            throw GraftError.hookRefused(function: hex(instruction.address), address: instruction.address,
                                         reason: "'\(instruction.text)' reads memory relative to rip and no scratch page could be mapped within ±2 GiB of it")
        }
        try tracee.writeMemory(at: base, bytes: copy)
        pages[pages.count - 1].used = Self.slotSize
        return base
    }

    /// Unmaps every page (errors ignored: a page that stays mapped is harmless) and forgets them.
    func unmapAll() {
        for page in pages { try? allocator.unmapPage(page.base) }
        pages.removeAll()
    }

    /// The process exec'd: its pages went with the old image.
    func forget() { pages.removeAll() }
}
