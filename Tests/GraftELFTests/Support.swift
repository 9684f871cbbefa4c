import Glibc
import GraftCore
@testable import GraftELF

let libcPath = "/usr/lib/x86_64-linux-gnu/libc.so.6"
let ldPath = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
let capstonePath = "/usr/lib/x86_64-linux-gnu/libcapstone.so.4"

/// Runs a shell command (fixed, trusted text) and returns its stdout.
func run(_ command: String) -> String {
    guard let pipe = popen(command, "r") else { return "" }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buffer, 1, buffer.count, pipe)
        if n <= 0 { break }
        out.append(contentsOf: buffer[0..<n])
    }
    pclose(pipe)
    return String(decoding: out, as: UTF8.self)
}

func makeTempDirectory() -> String {
    var template = Array("/tmp/graft-elf-XXXXXX".utf8CString)
    guard let result = mkdtemp(&template) else { fatalError("mkdtemp failed") }
    return String(cString: result)
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "cannot create \(path)")
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

func readFile(_ path: String, offset: UInt64, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    precondition(fd >= 0)
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
    return Array(bytes[0..<max(0, n)])
}

/// Parses `0x1f` or `31` (readelf prints big sizes in hex).
func number(_ text: Substring) -> UInt64 {
    if text.hasPrefix("0x") { return UInt64(text.dropFirst(2), radix: 16)! }
    return UInt64(text)!
}

struct ReadelfSymbol: Hashable {
    var name: String        // as printed: getpid@@GLIBC_2.2.5
    var value: UInt64
    var size: UInt64
    var type: String        // FUNC, IFUNC
    var bind: String

    var bareName: String { String(name.prefix { $0 != "@" }) }
}

/// Defined FUNC/IFUNC rows of `readelf -W --dyn-syms` (or `-s` for both tables) with a nonzero value.
func readelfFunctions(_ path: String, dynamicOnly: Bool = true) -> [ReadelfSymbol] {
    let text = run("readelf -W \(dynamicOnly ? "--dyn-syms" : "-s") \(path)")
    var rows: [ReadelfSymbol] = []
    for line in text.split(separator: "\n") {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        guard f.count >= 8, f[0].hasSuffix(":"), f[3] == "FUNC" || f[3] == "IFUNC", f[6] != "UND" else { continue }
        let value = UInt64(f[1], radix: 16)!
        guard value != 0 else { continue }
        rows.append(ReadelfSymbol(name: String(f[7]), value: value, size: number(f[2]), type: String(f[3]), bind: String(f[4])))
    }
    return rows
}

/// `LOAD` rows of `readelf -lW`: (offset, vaddr, filesz, memsz, flags).
func readelfLoads(_ path: String) -> [(offset: UInt64, vaddr: UInt64, filesz: UInt64, memsz: UInt64, flags: String)] {
    run("readelf -lW \(path)").split(separator: "\n").compactMap { line in
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        guard f.first == "LOAD", f.count >= 8 else { return nil }
        // LOAD off vaddr paddr filesz memsz FLAGS... align
        let flags = f[6..<(f.count - 1)].joined()
        return (number(f[1]), number(f[2]), number(f[4]), number(f[5]), flags)
    }
}

/// Maps text placing `path`'s PT_LOAD segments at `base` the way ld.so does (page-aligned), optionally
/// keeping only some of them.
func mapsText(for path: String, base: UInt64, inode: UInt64 = 1234, keep: (Int) -> Bool = { _ in true }) -> String {
    var lines: [String] = []
    for (index, load) in readelfLoads(path).enumerated() where keep(index) {
        let start = (base + load.vaddr) & ~0xfff
        let end = (base + load.vaddr + load.memsz + 0xfff) & ~0xfff
        let perms = (load.flags.contains("R") ? "r" : "-") + (load.flags.contains("W") ? "w" : "-")
            + (load.flags.contains("E") ? "x" : "-") + "p"
        let offset = load.offset & ~0xfff
        lines.append("\(String(start, radix: 16))-\(String(end, radix: 16)) \(perms) \(hex8(offset)) fd:01 \(inode)                    \(path)")
    }
    return lines.joined(separator: "\n") + "\n"
}

func hex8(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: Swift.max(0, 8 - digits.count)) + digits
}

/// A small C program with `.symtab`: two file-local functions both named `helper`, and globals.
enum CompiledSample {
    static let source = """
    #include <stdio.h>
    static __attribute__((noinline)) int helper(int x) { return x * 3 + 1; }
    __attribute__((noinline)) int graft_twice(int x) { return helper(x) * 2; }
    int graft_other(int);
    int main(int argc, char **argv) { (void)argv; printf("%d\\n", graft_twice(argc) + graft_other(argc)); return 0; }
    """
    static let source2 = """
    static __attribute__((noinline)) int helper(int x) { return x * 5 + 2; }
    __attribute__((noinline)) int graft_other(int x) { return helper(x) + 1; }
    """

    /// (PIE, non-PIE, relocatable object), built once per test run.
    static let paths: (pie: String, noPie: String, object: String) = {
        let dir = makeTempDirectory()
        writeFile(dir + "/a.c", Array(source.utf8))
        writeFile(dir + "/b.c", Array(source2.utf8))
        _ = run("cd \(dir) && cc -O1 -fPIE -pie -o victim-pie a.c b.c && cc -O1 -fno-pie -no-pie -o victim-nopie a.c b.c && cc -c -o a.o a.c 2>&1")
        return (dir + "/victim-pie", dir + "/victim-nopie", dir + "/a.o")
    }()
}

/// The error a throwing call produced, as GraftError.
func graftError(_ body: () throws -> Void) -> GraftError? {
    do { try body() } catch let error as GraftError { return error } catch { return nil }
    return nil
}
