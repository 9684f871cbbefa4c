import GraftCore
@testable import GraftKit
import Testing

/// GOT and vtable entries of a patch file: what `export` writes `apply` reads back, field for field;
/// a malformed one is named.
@Suite struct PatchFileWordsTests {
    @Test func gotAndVTableEntriesRoundTrip() throws {
        var got = PatchFile.Entry(location: "got_lazy!write@got", module: "got_lazy", buildID: "5124b98b", kind: "got", target: "logged_write",
                                  library: "/opt/fix/libgotfix.so", libraryBuildID: "c8891b22", original: [], new: [])
        got.symbol = "write"
        got.originalFunction = "libc.so.6!write"
        var vtable = PatchFile.Entry(location: "shapes::Box<int>::vtable[2] (shapes::Box<int>::area() const)", module: "shapes", buildID: "5ab6009b",
                                     kind: "vtable", target: "shapes!\"odd\\name", original: [], new: [])
        vtable.className = "shapes::Box<int>"
        vtable.slot = 2
        vtable.method = "shapes::Box<int>::area() const"
        vtable.originalFunction = "shapes!shapes::Box<int>::area() const"
        let file = PatchFile(entries: [got, vtable])
        let text = file.yaml(comment: "test")
        #expect(!text.contains("new:"))
        #expect(try PatchFile.parse(text, path: "fix.yaml") == file)
    }

    @Test func malformedWordEntriesAreNamed() {
        let head = "graft: 1\npatches:\n  - location: \"shapes::Circle::vtable[2]\"\n    module: \"shapes\"\n    target: \"fast_area\"\n"
        #expect(throws: GraftError.usage("patch file f: patch 1 (line 3): a vtable patch needs `slot: N` (the slot's index)")) {
            try PatchFile.parse(head + "    kind: \"vtable\"\n    class: \"shapes::Circle\"\n    original: \"shapes!x\"\n", path: "f")
        }
        #expect(throws: GraftError.usage("patch file f: patch 1 (line 3): no `original`")) {
            try PatchFile.parse(head + "    kind: \"vtable\"\n    class: \"shapes::Circle\"\n    slot: 2\n", path: "f")
        }
        #expect(throws: GraftError.usage("patch file f: patch 1 (line 3): a got patch has no `new` bytes (its word is the target's address, per process)")) {
            try PatchFile.parse(head + "    kind: \"got\"\n    symbol: \"write\"\n    original: \"libc.so.6!write\"\n    new: \"00\"\n", path: "f")
        }
        #expect(throws: GraftError.usage("patch file f: patch 1 (line 3): no `symbol`")) {
            try PatchFile.parse(head + "    kind: \"got\"\n    original: \"libc.so.6!write\"\n", path: "f")
        }
    }
}
