import Glibc
@testable import GraftKit
import GraftELF
import GraftPtrace
import Testing
import TestSupport

/// `graft patch --vtable CLASS --method|--slot --to`: one class's virtual method redirected through
/// its vtable, by demangled name or index; subclasses with their own vtables untouched and named;
/// the replacement calls the method through graft_original_; revert restores the pointer.
@Suite struct VTablePatchTests {
    @Test(arguments: [("area() const" as String?, nil as Int?), ("shapes::Circle::area() const", nil), ("area", nil), (nil, 2)])
    func circlesAreaIsRedirectedOnlyForCircles(method: String?, slot: Int?) throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0 == "shapes 12 9 12 12 labeled 8 18 18" })
        let outcome = try graft.patchVTable(pid: victim.pid, className: "shapes::Circle", method: method, index: slot, to: "fast_area",
                                            library: try Victims.path("libvtfix.so"))
        #expect(outcome.plan.method == "shapes::Circle::area() const")
        #expect(outcome.plan.slotIndex == 2, "slots 0 and 1 are the destructors")
        #expect(Set(outcome.plan.notChanged) == ["shapes::Ring", "shapes::LabeledCircle"])
        expectLine(victim, { $0 == "shapes 120 9 12 12 labeled 8 18 18" }, "a Circle's area through the replacement (original × 10); Ring and LabeledCircle keep theirs")
        #expect(try graft.unpatch(pid: victim.pid, ids: nil).map(\.outcome) == [.reverted])
        victim.drain()
        expectLine(victim, { $0 == "shapes 12 9 12 12 labeled 8 18 18" })
    }

    @Test func multipleInheritanceSaysWhichVtableIsNotChanged() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        _ = try graft.inject(pid: victim.pid, path: try Victims.path("libvtfix.so"))
        let outcome = try graft.patchVTable(pid: victim.pid, className: "shapes::LabeledCircle", method: "label", index: nil, to: "loud_label",
                                            library: try Victims.path("libvtfix.so"), dryRun: true)
        #expect(outcome.plan.notChanged.contains { $0.contains("secondary vtable 1") && $0.contains("thunk") })
        #expect(outcome.plan.checks.first?.contains("multiple inheritance") == true)
    }

    /// A virtual base: Prism's vtable starts with a vbase offset, not offset-to-top; Cube inherits
    /// area() and is constructed through a construction vtable. Only Prism objects change, and both
    /// others are named. A class template's vtable by its source name.
    @Test func virtualBasesConstructionVtablesAndTemplates() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectLine(victim, { $0 == "shapes 12 9 12 12 labeled 8 18 18" })
        let outcome = try graft.patchVTable(pid: victim.pid, className: "shapes::Prism", method: "area", index: nil, to: "fast_area",
                                            library: try Victims.path("libvtfix.so"))
        #expect(outcome.plan.method == "shapes::Prism::area() const")
        #expect(Set(outcome.plan.notChanged) == ["shapes::Cube", "construction vtable for shapes::Prism-in-shapes::Cube"], "\(outcome.plan.notChanged)")
        expectLine(victim, { $0 == "shapes 12 9 12 12 labeled 8 180 18" }, "a Prism's area × 10; the Cube keeps its own vtable's")
        #expect(try graft.unpatch(pid: victim.pid, ids: nil).map(\.outcome) == [.reverted])
        victim.drain()
        expectLine(victim, { $0 == "shapes 12 9 12 12 labeled 8 18 18" })
        let box = try graft.patchVTable(pid: victim.pid, className: "shapes::Box<int>", method: "area", index: nil, to: "fast_area",
                                        library: try Victims.path("libvtfix.so"), dryRun: true)
        #expect(box.plan.method == "shapes::Box<int>::area() const")
        // Marked's own slots end before the secondary group's vcall offsets (a 0 among them is no
        // slot: writing a method's address there would corrupt every call through a Tagged*).
        expectError({ "\($0)".contains("shapes::Marked's vtable has 4 slots (0…3); no slot 4") }) {
            _ = try graft.patchVTable(pid: victim.pid, className: "shapes::Marked", method: nil, index: 4, to: "fast_area",
                                      library: try Victims.path("libvtfix.so"), dryRun: true)
        }
    }

    @Test func refusalsNameTheProblem() throws {
        let victim = try Victim.launch("shapes")
        defer { victim.kill() }
        let graft = Graft(journal: temporaryJournal())
        expectError({ "\($0)".contains("no vtable for Circle (_ZTV6Circle)") }) {
            _ = try graft.patchVTable(pid: victim.pid, className: "Circle", method: "area", index: nil, to: "libc:abort")
        }
        expectError({ "\($0)".contains("shapes::Circle has no virtual method 'perimeter'; its slots: 0: shapes::Circle::~Circle()") }) {
            _ = try graft.patchVTable(pid: victim.pid, className: "shapes::Circle", method: "perimeter", index: nil, to: "libc:abort")
        }
        expectError({ "\($0)".contains("no slot 9") }) {
            _ = try graft.patchVTable(pid: victim.pid, className: "shapes::Circle", method: nil, index: 9, to: "libc:abort")
        }
        // An IFUNC's resolver is no method to call: the slot would call it instead of what it picks.
        expectError({ "\($0)".contains("IFUNC") }) {
            _ = try graft.patchVTable(pid: victim.pid, className: "shapes::Circle", method: "area", index: nil, to: "libc:strlen")
        }
        #expect(Demangler.demangle("_ZNK6shapes6Circle4areaEv") == "shapes::Circle::area() const")
        #expect(Demangler.demangle("$s4main5priceyS2iF") == "main.price(Swift.Int) -> Swift.Int", "Swift, through the Swift runtime's demangler")
        #expect(Demangler.demangle("_ZN4core3fmt5write17h0123456789abcdefE")?.hasPrefix("core::fmt::write") == true, "Rust's legacy mangling")
        #expect(Demangler.demangle("value_a") == nil)
        #expect(Demangler.mangleClassName("shapes::Circle") == "N6shapes6CircleE")
    }
}
