import GraftCore

/// Function names of a Go binary stripped of `.symtab` (`go build -ldflags=-s`): Go's runtime
/// keeps its own table of every function, `.gopclntab` (the `runtime.pclntab` data), for
/// tracebacks, and `strip` cannot remove it. Layout of Go 1.18 and later (`runtime/symtab.go`,
/// `pcHeader`, magic 0xfffffff0 for 1.18–1.19, 0xfffffff1 from 1.20): the header gives the
/// functions' count, the text start, where the names are and where `functab` is — `nfunc + 1`
/// pairs `{entryoff, funcoff}` (the last entry's offset is the end of the text) — and each `_func`
/// record starts with `{entryOff uint32, nameOff int32}`. Sizes are the distance to the next entry.
/// Older layouts (Go ≤ 1.17) give no names rather than wrong ones.
extension Reader {
    struct GoFunctionTable { var offset: Int, size: Int, textSection: UInt64 }

    /// Where `.gopclntab` is in the file, when there is one.
    func goFunctionTable(header: Header, sections: [Section]) -> GoFunctionTable? {
        guard Int(header.shstrndx) < sections.count else { return nil }
        let names = sections[Int(header.shstrndx)]
        guard names.offset <= UInt64(length), names.size <= UInt64(length) - names.offset else { return nil }
        func name(_ section: Section) -> String? {
            string(tableOffset: Int(names.offset), tableSize: Int(names.size), index: Int(section.name))
        }
        guard let table = sections.first(where: { name($0) == ".gopclntab" }),
              table.offset <= UInt64(length), table.size <= UInt64(length) - table.offset, table.size >= 72 else { return nil }
        let text = sections.first(where: { name($0) == ".text" })?.addr ?? 0
        return GoFunctionTable(offset: Int(table.offset), size: Int(table.size), textSection: text)
    }

    /// Every function the table names, as symbols (link-time addresses; global; not from .dynsym).
    func goFunctions(_ table: GoFunctionTable) -> [ELFSymbol] {
        let base = table.offset, size = table.size
        let magic = u32(base)
        guard magic == 0xffff_fff0 || magic == 0xffff_fff1, u8(base + 7) == 8 else { return [] }
        let count = Int(truncatingIfNeeded: u64(base + 8))
        var text = u64(base + 24)
        if text == 0 { text = table.textSection }  // PIE: the linker leaves it to a relocation
        let namesAt = Int(truncatingIfNeeded: u64(base + 32))
        let functabAt = Int(truncatingIfNeeded: u64(base + 64))
        guard count > 0, count < 10_000_000, namesAt > 0, namesAt < size, functabAt > 0, functabAt < size,
              functabAt + (count + 1) * 8 <= size else { return [] }
        var symbols: [ELFSymbol] = []
        symbols.reserveCapacity(count)
        for i in 0..<count {
            let entry = u32(base + functabAt + i * 8)
            let record = Int(u32(base + functabAt + i * 8 + 4))
            let next = u32(base + functabAt + (i + 1) * 8)
            guard functabAt + record + 8 <= size, next > entry else { continue }
            let nameOffset = Int(Int32(bitPattern: u32(base + functabAt + record + 4)))
            guard nameOffset >= 0, namesAt + nameOffset < size,
                  let name = string(tableOffset: base + namesAt, tableSize: size - namesAt, index: nameOffset), !name.isEmpty else { continue }
            symbols.append(ELFSymbol(name: name, value: text &+ UInt64(entry), size: UInt64(next - entry), kind: .function,
                                     isGlobal: true, fromDynsym: false))
        }
        return symbols
    }
}
