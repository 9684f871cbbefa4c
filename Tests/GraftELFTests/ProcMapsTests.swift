import Glibc
import Testing
import GraftCore
@testable import GraftELF

@Suite struct ProcMapsTests {
    static let text = """
    55d0c0a00000-55d0c0a04000 r--p 00000000 fd:01 1835019                    /usr/bin/victim
    55d0c0a04000-55d0c0a19000 r-xp 00004000 fd:01 1835019                    /usr/bin/victim
    55d0c2b6b000-55d0c2b8c000 rw-p 00000000 00:00 0                          [heap]
    7f3a1c000000-7f3a1c021000 rw-p 00000000 00:00 0 
    7f3a1d228000-7f3a1d3bd000 r-xp 00028000 fd:01 2883663                    /usr/lib/x86_64-linux-gnu/libc.so.6
    7f3a1d500000-7f3a1d501000 r-xp 00001000 08:02 42                         /tmp/my dir/lib with spaces.so
    7f3a1d600000-7f3a1d601000 r-xs 00000000 08:02 43                         /tmp/old lib.so (deleted)
    7f3a1d700000-7f3a1d701000 rw-s 00000000 00:01 1028                       /memfd:jit (deleted)
    this line is garbage
    7ffd5e3f0000-7ffd5e411000 rw-p 00000000 00:00 0                          [stack]
    7ffd5e5b4000-7ffd5e5b6000 r-xp 00000000 00:00 0                          [vdso]
    ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
    """

    @Test func parsesEveryKindOfLine() {
        let maps = ProcMaps.parse(Self.text)
        #expect(maps.count == 11)
        #expect(maps[0] == Mapping(start: 0x55d0c0a00000, end: 0x55d0c0a04000, readable: true, writable: false,
                                   executable: false, isPrivate: true, offset: 0, device: "fd:01", inode: 1835019,
                                   path: "/usr/bin/victim", isDeleted: false))
        #expect(maps[1].permissions == "r-xp" && maps[1].offset == 0x4000 && maps[1].isFileBacked)
        #expect(maps[2].path == "[heap]" && !maps[2].isFileBacked && maps[2].permissions == "rw-p")
        #expect(maps[3].path == "" && maps[3].inode == 0 && !maps[3].isFileBacked)
        #expect(maps[4].offset == 0x28000 && maps[4].inode == 2883663 && maps[4].executable)
        #expect(maps[5].path == "/tmp/my dir/lib with spaces.so" && !maps[5].isDeleted && maps[5].device == "08:02")
        #expect(maps[6] == Mapping(start: 0x7f3a1d600000, end: 0x7f3a1d601000, readable: true, writable: false,
                                   executable: true, isPrivate: false, offset: 0, device: "08:02", inode: 43,
                                   path: "/tmp/old lib.so", isDeleted: true))
        #expect(maps[6].permissions == "r-xs")
        #expect(maps[7].path == "/memfd:jit" && maps[7].isDeleted && maps[7].isFileBacked)
        #expect(maps[8].path == "[stack]")
        #expect(maps[9].path == "[vdso]" && maps[9].executable && !maps[9].isFileBacked)
        #expect(maps[10].start == 0xffffffffff600000 && maps[10].permissions == "--xp")
        #expect(maps[1].contains(0x55d0c0a04000) && maps[1].contains(0x55d0c0a18fff))
        #expect(!maps[1].contains(0x55d0c0a19000) && !maps[1].contains(0x55d0c0a03fff))
        #expect(maps[6].description == "0x7f3a1d600000-0x7f3a1d601000 r-xs 0x0 /tmp/old lib.so (deleted)")
        #expect(ProcMaps.parse("") == [])
        #expect(ProcMaps.parse("1000-2000 rwxq 0 00:00 0\n2000-1000 r--p 0 00:00 0\nzz-3000 r--p 0 00:00 0\n").isEmpty)
    }

    @Test func readsOwnProcess() throws {
        let maps = try ProcMaps.read(pid: getpid())
        #expect(maps.count > 10)
        let getpidAddress = UInt64(UInt(bitPattern: try #require(dlsym(nil, "getpid"))))
        let mapping = try #require(maps.first { $0.contains(getpidAddress) })
        #expect(mapping.executable && mapping.readable && !mapping.writable && mapping.isPrivate)
        #expect(mapping.path == libcPath)
        #expect(mapping.isFileBacked)
        #expect(maps.contains { $0.path == "[stack]" })
        #expect(maps.contains { $0.path == "[vdso]" })
        // Sorted and non-overlapping, as the kernel prints them.
        #expect(zip(maps, maps.dropFirst()).allSatisfy { $0.end <= $1.start })
        var local: Int32 = 0
        let stackAddress = UInt64(UInt(bitPattern: withUnsafeMutablePointer(to: &local) { UnsafeMutableRawPointer($0) }))
        #expect(maps.first { $0.contains(stackAddress) }?.writable == true)
    }

    @Test func missingProcess() {
        #expect(graftError { _ = try ProcMaps.read(pid: Int32.max) } == .noSuchProcess(pid: Int32.max))
    }
}
