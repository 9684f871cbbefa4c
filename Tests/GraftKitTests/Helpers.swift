import Glibc
import GraftKit
import Testing
import TestSupport

/// A journal directory of its own for each test.
func temporaryJournal() -> Journal {
    var template = Array("/tmp/graft-test-journal-XXXXXX".utf8CString)
    let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    return Journal(directory: dir)
}

/// The function's bytes in the process and in its ELF file, for "memory equals the file" checks.
func functionBytes(pid: Int32, _ name: String) throws -> (memory: [UInt8], file: [UInt8], address: UInt64) {
    let index = try SymbolIndex(pid: pid)
    let resolved = try index.resolve(try Location.parse(name))
    let module = try #require(resolved.module)
    let symbol = try #require(resolved.symbol)
    let start = try #require(resolved.symbolAddress)
    let memory = try ProcessMemory.read(pid: pid, at: start, count: Int(symbol.size))
    let file = try #require(try module.elf().bytes(atVirtualAddress: module.linkAddress(start), count: Int(symbol.size)))
    return (memory, file, start)
}

/// Reads lines until one satisfies `predicate` (skipping output printed before a change took effect).
func expectLine(_ victim: Victim, timeout: Double = 5, _ predicate: @escaping (String) -> Bool, _ comment: Comment? = nil) {
    let line = victim.waitForLine(timeout: timeout, where: predicate)
    #expect(line != nil, comment)
}

/// Expects `body` to throw exactly `expected`.
func expectError(_ expected: (GraftError) -> Bool, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected an error, got success", sourceLocation: sourceLocation)
    } catch let error as GraftError {
        #expect(expected(error), "unexpected error: \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error type: \(error)", sourceLocation: sourceLocation)
    }
}
