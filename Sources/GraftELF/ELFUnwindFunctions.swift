import GraftCore

/// A range of code, link time: `[start, start + size)`.
public struct CodeRange: Sendable, Equatable {
    public let start: UInt64
    public let size: UInt64
    public init(start: UInt64, size: UInt64) {
        self.start = start
        self.size = size
    }
    public func contains(_ vaddr: UInt64) -> Bool { vaddr >= start && vaddr - start < size }
}

/// Functions a stripped file still describes: every function compiled with call-frame information
/// has an FDE in `.eh_frame`, and `.eh_frame_hdr` (PT_GNU_EH_FRAME, kept by `strip`) lists their
/// first bytes sorted, for the unwinder's binary search. graft uses them to give code without a
/// symbol a function start — `libc.so.6+0x2724a` rather than "somewhere in libc.so.6" — in traces,
/// and to bound it.
///
/// Read: the header's table in the encoding every GNU/LLVM linker writes (`DW_EH_PE_datarel |
/// sdata4`, a count in `udata4`); each FDE's `pc_begin`/`pc_range` as `pcrel | sdata4` (GCC's and
/// clang's x86_64 default), checked against the table. Any other encoding: no ranges (nothing is
/// guessed).
extension ELFFile {
    /// The FDE function containing link-time `vaddr`, nil when none does (or there is no table).
    public func unwindFunction(containing vaddr: UInt64) -> CodeRange? {
        let ranges = unwindFunctions
        var low = 0, high = ranges.count   // first index with start > vaddr
        while low < high {
            let mid = (low + high) / 2
            if ranges[mid].start <= vaddr { low = mid + 1 } else { high = mid }
        }
        guard low > 0, ranges[low - 1].contains(vaddr) else { return nil }
        return ranges[low - 1]
    }

    /// Every FDE function of the file, sorted by start (parsed once).
    public var unwindFunctions: [CodeRange] {
        cache.withLock { cache in
            if let known = cache.unwindFunctions { return known }
            let parsed = (try? parseUnwindFunctions()) ?? []
            cache.unwindFunctions = parsed
            return parsed
        }
    }

    private func parseUnwindFunctions() throws -> [CodeRange] {
        let r = reader
        let header = try Reader.parseHeader(r)
        guard let table = try r.programHeaders(header).first(where: { $0.type == 0x6474_e550 }),  // PT_GNU_EH_FRAME
              table.filesz >= 12 else { return [] }
        let hdr = table.vaddr
        guard let head = bytes(atVirtualAddress: hdr, count: 4), head[0] == 1 else { return [] }
        let framePointerEncoding = head[1], countEncoding = head[2], tableEncoding = head[3]
        // eh_frame_ptr is 4 bytes in the sdata4/udata4 encodings; the count follows it.
        guard framePointerEncoding & 0x0f == 0x0b || framePointerEncoding & 0x0f == 0x03,
              countEncoding == 0x03, tableEncoding == 0x3b,
              let countBytes = bytes(atVirtualAddress: hdr + 8, count: 4) else { return [] }
        let count = Int(sdata4(countBytes, at: 0)) & 0x7fff_ffff
        guard count > 0, UInt64(count) * 8 + 12 <= table.filesz,
              let entries = bytes(atVirtualAddress: hdr + 12, count: count * 8) else { return [] }
        var ranges: [CodeRange] = []
        ranges.reserveCapacity(count)
        for i in 0..<count {
            let start = hdr &+ UInt64(bitPattern: Int64(sdata4(entries, at: i * 8)))
            let fde = hdr &+ UInt64(bitPattern: Int64(sdata4(entries, at: i * 8 + 4)))
            guard let record = bytes(atVirtualAddress: fde, count: 16),
                  sdata4(record, at: 0) != -1 else { continue }  // 64-bit DWARF: not written on x86_64
            let pcBegin = (fde &+ 8) &+ UInt64(bitPattern: Int64(sdata4(record, at: 8)))
            let size = UInt64(UInt32(bitPattern: sdata4(record, at: 12)))
            guard pcBegin == start, size > 0 else { continue }
            ranges.append(CodeRange(start: start, size: size))
        }
        return ranges.sorted { $0.start < $1.start }
    }
}

/// A little-endian signed 32-bit value at `offset`.
private func sdata4(_ bytes: [UInt8], at offset: Int) -> Int32 {
    Int32(bitPattern: UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24)
}
