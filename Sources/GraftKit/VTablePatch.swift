import GraftCore
import GraftELF
import GraftMachine
import GraftPtrace

/// A C++ virtual method redirected through its class's vtable (Itanium ABI): one pointer of
/// `_ZTV<class>` rewritten, so every object of that class — and only of that class: a subclass has
/// its own vtable — calls the new function through a virtual call. One aligned word.
public struct VTablePatchPlan: Sendable {
    public let instance: ProcessInstance
    /// `shapes::Circle`, its vtable symbol and module.
    public let className: String
    public let vtableSymbol: String
    public let module: String
    public let modulePath: String
    public let buildID: String?
    /// The slot: its index among the primary vtable's virtual functions, and its address.
    public let slotIndex: Int
    public let slot: UInt64
    /// What the slot holds now (the method), as a name (demangled) and an address.
    public let method: String
    public let currentValue: UInt64
    public let target: ResolvedLocation
    public let originalPointer: UInt64?
    public let originalPointerSymbol: String?
    public let library: LibraryRecord?
    /// Other vtables holding the same function (subclasses that inherit it, secondary vtables'
    /// thunks): left unchanged, named for the user.
    public let notChanged: [String]
    public let checks: [String]

    public var originalBytes: [UInt8] { littleEndian(currentValue) }
    public var newBytes: [UInt8] { littleEndian(target.address) }
}

public struct VTablePatchOutcome: Sendable {
    public let plan: VTablePatchPlan
    public let record: PatchRecord?
    public let dryRun: Bool
    public var stopWindowNanoseconds: UInt64 = 0
}

/// One vtable group of a `_ZTV` object: offset-to-top, the typeinfo pointer, then the virtual
/// functions. A class with several bases has a primary group and secondary ones.
struct VTableGroup {
    let offsetToTop: Int64
    /// Address of the first virtual-function slot, and the slots' values.
    let firstSlot: UInt64
    let slots: [UInt64]
}

extension Graft {
    // MARK: - vtable

    /// Redirects slot `method` (a demangled name: `area() const`, `shapes::Circle::area() const`,
    /// or just `area`) or `index` of `className`'s primary vtable to `to`.
    public func patchVTable(pid: Int32, className: String, method: String?, index slotIndex: Int?, to: String,
                            library: String? = nil, dryRun: Bool = false) throws -> VTablePatchOutcome {
        guard (method == nil) != (slotIndex == nil) else { throw GraftError.usage("give one of --method SIGNATURE or --slot N with --vtable") }
        return try withLibraryTarget(pid: pid, to: to, library: library, dryRun: dryRun) { instance, contents, target, libraryRecord in
            let plan = try planVTable(instance: instance, contents: contents, className: className,
                                      method: method, slotIndex: slotIndex, to: target, library: libraryRecord)
            if dryRun { return VTablePatchOutcome(plan: plan, record: nil, dryRun: true) }
            if let signal = cancellation?() { throw GraftError.interrupted(signal: signal) }
            return try applyVTable(plan, contents: &contents)
        }
    }

    /// The slot side of a vtable patch, no target needed (`apply` checks a patch file's entry with
    /// it before loading any library): the class's vtable, its groups, the chosen slot and its word.
    struct VTableSlot {
        let module: LoadedModule
        let vtableSymbol: String
        let address: UInt64
        let groups: [VTableGroup]
        let names: [String]
        let chosen: Int
        let value: UInt64
        let slot: UInt64
    }

    func vtableSlot(of className: String, method: String?, slotIndex: Int?, index: SymbolIndex, pid: Int32) throws -> VTableSlot {
        let vtableSymbol = try Graft.vtableSymbol(of: className, in: index)
        // The vtable: the first module defining it (the executable first), as the loader binds it.
        var found: (LoadedModule, ELFSymbol)?
        for module in index.modules where module.hasExecutableMapping {
            if let symbol = (try? module.elf())?.definedSymbols(named: vtableSymbol).first(where: { $0.kind == .object && $0.size >= 24 }) {
                found = (module, symbol)
                break
            }
        }
        guard let (module, symbol) = found else {
            throw GraftError.usage("no vtable for \(className) (\(vtableSymbol)) in process \(pid): a class with no virtual method, a name that differs (namespaces: shapes::Circle), or a stripped module")
        }
        let address = module.runtimeAddress(symbol)
        let words = try readWords(pid: pid, at: address, count: Int(symbol.size / 8))
        // The class's typeinfo marks each group's address point; with virtual bases the vtable starts
        // with vbase/vcall offsets, not with offset-to-top.
        let typeinfo = (try? module.elf())?.definedSymbols(named: "_ZTI" + vtableSymbol.dropFirst(4)).first.map { module.runtimeAddress($0) }
        let groups = Graft.vtableGroups(words, at: address, typeinfo: typeinfo).map { group in
            // A group's slots end where code pointers do (the next group's vbase/vcall offsets follow,
            // often 0: no slot holds 0, a pure virtual one holds __cxa_pure_virtual).
            VTableGroup(offsetToTop: group.offsetToTop, firstSlot: group.firstSlot,
                        slots: Array(group.slots.prefix { index.mapping(containing: $0)?.executable == true }))
        }
        guard let primary = groups.first, !primary.slots.isEmpty else {
            throw GraftError.usage("\(className)'s vtable (\(vtableSymbol)) has no virtual function slots")
        }
        let names = primary.slots.map { value in Graft.methodName(at: value, in: index) }
        let chosen: Int
        if let slotIndex {
            guard primary.slots.indices.contains(slotIndex) else {
                throw GraftError.usage("\(className)'s vtable has \(primary.slots.count) slots (0…\(primary.slots.count - 1)); no slot \(slotIndex)")
            }
            chosen = slotIndex
        } else {
            let wanted = method!
            let matches = names.indices.filter { Graft.method(names[$0], matches: wanted, className: className) }
            if matches.isEmpty {
                let list = names.enumerated().map { "\($0.offset): \($0.element)" }.joined(separator: ", ")
                throw GraftError.usage("\(className) has no virtual method '\(wanted)'; its slots: \(list)")
            }
            if Set(matches.map { primary.slots[$0] }).count > 1 {
                throw GraftError.usage("'\(wanted)' matches several slots of \(className): \(matches.map { "\($0): \(names[$0])" }.joined(separator: ", ")); give the whole signature or --slot N")
            }
            chosen = matches[0]  // a destructor's two slots (complete, deleting) differ in value
        }
        let value = primary.slots[chosen]
        let slot = primary.firstSlot + UInt64(chosen) * 8
        return VTableSlot(module: module, vtableSymbol: vtableSymbol, address: address, groups: groups, names: names,
                          chosen: chosen, value: value, slot: slot)
    }

    func planVTable(instance: ProcessInstance, contents: JournalContents, className: String,
                    method: String?, slotIndex: Int?, to: String, library: LibraryRecord?) throws -> VTablePatchPlan {
        let pid = instance.pid
        let index = try symbolIndex(pid: pid, contents: contents)
        let found = try vtableSlot(of: className, method: method, slotIndex: slotIndex, index: index, pid: pid)
        let (module, vtableSymbol, address, groups, names, chosen, value, slot) =
            (found.module, found.vtableSymbol, found.address, found.groups, found.names, found.chosen, found.value, found.slot)
        let target = try Graft.wordPatchTarget(to, index: index, pid: pid)
        if let record = CodeSite.appliedPatch(in: contents, overlapping: slot..<(slot + 8)) {
            throw GraftError.alreadyPatched(address: slot, id: record.id, function: record.function, pid: pid)
        }
        if value == target.address { throw GraftError.usage("\(className)'s slot \(chosen) already holds \(target)") }
        let label = "\(className)::vtable[\(chosen)]"
        let pointer = try PatchPlanner.checkedOriginalPointer(of: target, function: label, index: index)
        var checks = ["\(vtableSymbol) (vtable for \(className)) is in \(module.name) at \(hex(address)), \(groups.count) group\(groups.count == 1 ? "" : "s") (\(groups.count > 1 ? "primary and secondary: multiple inheritance" : "single inheritance"))",
                      "slot \(chosen) at \(hex(slot)) holds \(names[chosen]) (\(hex(value)))"]
        if let pointer { checks.append("\(pointer.1) is a writable pointer: it gets \(hex(value)), the method") }
        // Who else calls that function through a vtable: not changed by this patch.
        var notChanged: [String] = []
        for (groupIndex, group) in groups.enumerated().dropFirst() where group.slots.contains(where: { Graft.methodName(at: $0, in: index).hasSuffix("thunk to \(names[chosen])") }) {
            notChanged.append("\(className)'s secondary vtable \(groupIndex) (offset \(group.offsetToTop)), through a thunk")
        }
        for other in index.modules where other.hasExecutableMapping {
            guard let elf = try? other.elf() else { continue }
            // Subclasses' vtables, and construction vtables (`_ZTC…`: used while a subclass with a
            // virtual base is being constructed) that hold the method.
            for vtable in elf.definedSymbols(where: { ($0.hasPrefix("_ZTV") || $0.hasPrefix("_ZTC")) && $0 != vtableSymbol })
            where vtable.kind == .object && vtable.size >= 24 {
                guard let slots = try? readWords(pid: pid, at: other.runtimeAddress(vtable), count: Int(vtable.size / 8)),
                      slots.dropFirst(2).contains(value) else { continue }
                let name = Demangler.demangle(vtable.name) ?? vtable.name
                notChanged.append(name.hasPrefix("vtable for ") ? String(name.dropFirst("vtable for ".count)) : name)
            }
        }
        if !notChanged.isEmpty { checks.append("not changed (their own vtables hold the same method): \(notChanged.joined(separator: "; "))") }
        return VTablePatchPlan(instance: instance, className: className, vtableSymbol: vtableSymbol, module: module.name, modulePath: module.path,
                               buildID: try? module.elf().buildID, slotIndex: chosen, slot: slot, method: names[chosen], currentValue: value,
                               target: target, originalPointer: pointer?.0, originalPointerSymbol: pointer?.1, library: library,
                               notChanged: notChanged, checks: checks)
    }

    /// `_ZTV` + the class's Itanium name: mangled from the name (`shapes::Circle` → `_ZTVN6shapes6CircleE`),
    /// or for a class template's instance (`shapes::Box<int>`) found among the vtables by demangled name.
    static func vtableSymbol(of className: String, in index: SymbolIndex) throws -> String {
        if let mangled = Demangler.mangleClassName(className) { return "_ZTV" + mangled }
        let wanted = ("vtable for " + className).filter { $0 != " " }
        for module in index.modules where module.hasExecutableMapping {
            guard let elf = try? module.elf() else { continue }
            for vtable in elf.definedSymbols(where: { $0.hasPrefix("_ZTV") }) where vtable.kind == .object {
                if Demangler.demangle(vtable.name)?.filter({ $0 != " " }) == wanted { return vtable.name }
            }
        }
        throw GraftError.usage("no vtable for \(className) in process \(index.pid.map(String.init) ?? "?"): a class template's instance is named as the compiler spells it (shapes::Box<int>), a class with no virtual method has none")
    }

    /// The groups of a `_ZTV` object's words: each starts with offset-to-top and the typeinfo
    /// pointer (the same typeinfo in every group of one class); the slots run to the next group.
    static func vtableGroups(_ words: [UInt64], at address: UInt64, typeinfo known: UInt64? = nil) -> [VTableGroup] {
        guard words.count >= 3 else { return [] }
        // The primary group: offset-to-top 0, then the typeinfo (after any vbase/vcall offsets).
        let first = known.flatMap { typeinfo in (1..<words.count).first { words[$0] == typeinfo && words[$0 - 1] == 0 } }.map { $0 - 1 } ?? 0
        let typeinfo = words[first + 1]
        var starts = [first]
        var i = first + 3
        while i < words.count {
            // A later group: a (small negative) offset-to-top followed by the same typeinfo.
            if words[i] == typeinfo, Int64(bitPattern: words[i - 1]) < 0, Int64(bitPattern: words[i - 1]) > -(1 << 20) {
                starts.append(i - 1)
                i += 2
                continue
            }
            i += 1
        }
        return starts.enumerated().map { n, start in
            let end = n + 1 < starts.count ? starts[n + 1] : words.count
            return VTableGroup(offsetToTop: Int64(bitPattern: words[start]), firstSlot: address + UInt64(start + 2) * 8,
                               slots: Array(words[(start + 2)..<max(start + 2, end)]))
        }
    }

    /// A slot's function, demangled (`shapes::Circle::area() const`), or its address.
    static func methodName(at value: UInt64, in index: SymbolIndex) -> String {
        guard value != 0, let resolved = index.symbolize(value), let symbol = resolved.symbol else { return value == 0 ? "(null)" : hex(value) }
        let name = Demangler.demangle(symbol.name) ?? symbol.name
        return resolved.offset == 0 ? name : "\(name)+\(hex(resolved.offset))"
    }

    /// `area`, `area() const`, `Circle::area() const` or the whole `shapes::Circle::area() const`.
    static func method(_ name: String, matches wanted: String, className: String) -> Bool {
        if name == wanted { return true }
        if name.hasSuffix("::" + wanted) { return true }
        if !wanted.contains("(") {
            guard let open = name.firstIndex(of: "(") else { return false }
            let bare = name[..<open]
            return bare == wanted || bare.hasSuffix("::" + wanted)
        }
        return false
    }

    func readWords(pid: Int32, at address: UInt64, count: Int) throws -> [UInt64] {
        let bytes = try ProcessMemory.read(pid: pid, at: address, count: count * 8)
        return (0..<count).map { readLittleEndianUInt64(bytes, at: $0 * 8) }
    }

    private func applyVTable(_ plan: VTablePatchPlan, contents: inout JournalContents) throws -> VTablePatchOutcome {
        var record = PatchRecord(
            id: contents.nextID, address: hex(plan.slot), function: "\(plan.className)::vtable[\(plan.slotIndex)] (\(plan.method))",
            module: plan.modulePath, buildID: plan.buildID, kind: "vtable", target: plan.target.description, targetAddress: hex(plan.target.address),
            returnValue: nil, originalBytes: hexString(plan.originalBytes), newBytes: hexString(plan.newBytes), state: .applying,
            appliedAt: isoTimestamp(), revertedAt: nil, library: plan.library?.path, libraryBuildID: plan.library?.buildID, libraryBase: plan.library?.base)
        record.originalPointer = plan.originalPointer.map(hex)
        record.originalPointerSymbol = plan.originalPointerSymbol
        record.originalEntry = hex(plan.currentValue)
        let (applied, window) = try applyWordPatch(record, instance: plan.instance, contents: &contents, slot: plan.slot,
                                                   old: plan.originalBytes, new: plan.newBytes,
                                                   pointer: plan.originalPointer, pointerValue: plan.currentValue)
        record = applied
        return VTablePatchOutcome(plan: plan, record: record, dryRun: false, stopWindowNanoseconds: window)
    }
}
