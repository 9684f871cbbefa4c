import GraftCore
import GraftELF
import GraftMachine

// The JSON objects graft prints with --json, one per line, each with an "event" key. Addresses and
// byte strings are hex strings. Scripts are written against these keys: add, never rename.

extension Instruction {
    /// `{"address":"0x…","bytes":"…","text":"jmp 0x…"}`
    public var json: JSON {
        .object([("address", .string(hex(address))), ("bytes", .string(hexString(bytes))), ("text", .string(text))])
    }
}

extension ResolvedLocation {
    public func symbolJSON() -> JSON {
        .object([
            ("event", "symbol"),
            ("address", .string(hex(address))),
            ("size", .uint(symbol?.size ?? 0)),
            ("module", .string(module?.name ?? "")),
            ("path", .string(module?.path ?? "")),
            ("name", .string(symbol?.displayName ?? "")),
        ] + (symbol.map { $0.displayName != $0.name ? [("mangled", JSON.string($0.name))] : [] } ?? [])
          // STT_GNU_IFUNC: the code at `address` is the resolver; a patch or hook there goes to the
          // implementation the process uses.
          + (symbol?.kind == .ifunc ? [("ifunc", JSON.bool(true))] : []))
    }
}

extension PatchOutcome {
    public var json: JSON {
        var fields: [(String, JSON)] = [
            ("event", "patch"),
            ("dry_run", .bool(dryRun)),
            ("pid", .int(Int64(plan.instance.pid))),
        ]
        if let record { fields.append(("id", .int(Int64(record.id)))) }
        fields += [
            ("address", .string(hex(plan.address))),
            ("function", .string(plan.location.description)),
            ("module", .string(plan.modulePath)),
            ("kind", .string({ if case .jump = plan.action { return "jump" } else { return "return" } }())),
        ]
        switch plan.action {
        case .jump:
            fields.append(("target", .string(plan.target?.description ?? "")))
            fields.append(("target_address", .string(plan.target.map { hex($0.address) } ?? "")))
        case .returnValue(let value):
            fields.append(("return_value", .int(value)))
        }
        fields += [
            ("encoding", .string(plan.encoding)),
            ("kept_endbr64", .bool(plan.keptEndbr64)),
            ("original_bytes", .string(hexString(plan.originalBytes))),
            ("new_bytes", .string(hexString(plan.newBytes))),
            ("original_instructions", .array(plan.originalInstructions.map(\.json))),
            ("new_instructions", .array(plan.newInstructions.map(\.json))),
            ("checks", .array(plan.checks.map { .string($0) })),
        ]
        if let library = plan.libraryRecord {
            fields.append(("library", .object([("path", .string(library.path)), ("build_id", library.buildID.map { .string($0) } ?? .null),
                                               ("base", .string(library.base))])))
        }
        if let planned = plan.trampoline {
            let placed = trampoline ?? planned.preview
            var object: [(String, JSON)] = [("address", .string(hex(placed.address)))]
            if let page = planned.page { object.append(("page", .string(hex(page)))) }
            if let island = planned.island { object.append(("island", .string(hex(island)))) }
            object += [("resume_address", .string(hex(placed.resumeAddress))), ("moved_bytes", .int(Int64(placed.movedLength))),
                       ("bytes", .string(hexString(placed.bytes))), ("pointer", .string(hex(planned.pointerAddress))),
                       ("pointer_symbol", .string(planned.pointerSymbol))]
            if !dryRun { object.append(("moved_threads", .array(movedThreads.map { .int(Int64($0)) }))) }
            fields.append(("trampoline", .object(object)))
        }
        if !dryRun {
            fields += [
                ("threads", .int(Int64(threadCount))),
                ("stepped_threads", .array(steppedThreads.map { .int(Int64($0)) })),
                ("stop_window_ns", .uint(stopWindowNanoseconds)),
            ]
            if borrowedThreadNanoseconds > 0 { fields.append(("borrowed_thread_ns", .uint(borrowedThreadNanoseconds))) }
        }
        return .object(fields)
    }
}

extension PatchRecord {
    var jsonFields: [(String, JSON)] {
        var fields: [(String, JSON)] = [
            ("id", .int(Int64(id))),
            ("address", .string(address)),
            ("function", .string(function)),
            ("module", .string(module)),
            ("kind", .string(kind)),
        ]
        if let target { fields.append(("target", .string(target))) }
        if let targetAddress { fields.append(("target_address", .string(targetAddress))) }
        if let returnValue { fields.append(("return_value", .int(returnValue))) }
        fields += [
            ("original_bytes", .string(originalBytes)),
            ("new_bytes", .string(newBytes)),
            ("applied_at", .string(appliedAt)),
        ]
        if let revertedAt { fields.append(("reverted_at", .string(revertedAt))) }
        if let inheritedFrom {
            fields.append(("inherited_from", .object([("pid", .int(Int64(inheritedFrom))), ("patch", inheritedPatch.map { .int(Int64($0)) } ?? .null)])))
        }
        if let library {
            fields.append(("library", .object([("path", .string(library)), ("build_id", libraryBuildID.map { .string($0) } ?? .null),
                                               ("base", libraryBase.map { .string($0) } ?? .null)])))
        }
        if let trampoline {
            var object: [(String, JSON)] = [("address", .string(trampoline))]
            if let trampolinePage { object.append(("page", .string(trampolinePage))) }
            if let trampolineState { object.append(("state", .string(trampolineState))) }
            if let originalPointer { object.append(("pointer", .string(originalPointer))) }
            if let originalPointerSymbol { object.append(("pointer_symbol", .string(originalPointerSymbol))) }
            fields.append(("trampoline", .object(object)))
        }
        return fields
    }
}

extension LibraryRecord {
    /// `{"path":…,"build_id":…,"base":…,"end":…,"name":…,"mapped_as":…,"loader":…,"handle":…,"state":…}`
    public var json: JSON {
        var fields: [(String, JSON)] = [("path", .string(path))]
        fields.append(("build_id", buildID.map { .string($0) } ?? .null))
        fields += [("base", .string(base)), ("end", .string(end)), ("name", .string(name)), ("mapped_as", .string(mappedAs)),
                   ("loader", .string(loader))]
        if let handle { fields.append(("handle", .string(handle))) }
        fields += [("state", .string(state.rawValue)), ("loaded_at", .string(loadedAt))]
        if let unloadedAt { fields.append(("unloaded_at", .string(unloadedAt))) }
        return .object(fields)
    }
}

extension InjectOutcome {
    public func json(pid: Int32) -> JSON {
        var fields: [(String, JSON)] = [("event", "inject"), ("pid", .int(Int64(pid))), ("library", record.json),
                                        ("already_loaded", .bool(alreadyLoaded)), ("via_memfd", .bool(viaMemfd)),
                                        ("loaded_by", .string(loadedBy))]
        if let loaderThread { fields.append(("loader_thread", .int(Int64(loaderThread)))) }
        fields.append(("hijack_steps", .int(Int64(hijackSteps))))
        fields += [("stop_window_ns", .uint(stopWindowNanoseconds)), ("elapsed_ns", .uint(elapsedNanoseconds))]
        return .object(fields)
    }
}

extension PatchStatus {
    public func json(pid: Int32) -> JSON {
        .object([("event", "patch-status"), ("pid", .int(Int64(pid)))] + record.jsonFields + [
            ("state", .string(state.rawValue)),
            ("journal_state", .string(record.state.rawValue)),
            ("memory_bytes", .string(hexString(memoryBytes))),
        ])
    }
}

extension UnpatchResult {
    public func json(pid: Int32) -> JSON {
        var fields: [(String, JSON)] = [("event", "unpatch"), ("pid", .int(Int64(pid)))] + record.jsonFields
        fields.append(("outcome", .string(outcome.rawValue)))
        if let message { fields.append(("message", .string(message))) }
        fields.append(("stepped_threads", .array(steppedThreads.map { .int(Int64($0)) })))
        if outcome == .reverted { fields.append(("stop_window_ns", .uint(stopWindowNanoseconds))) }
        if let trampolineNote { fields.append(("trampoline_note", .string(trampolineNote))) }
        return .object(fields)
    }
}

extension UnloadResult {
    public func json(pid: Int32) -> JSON {
        var fields: [(String, JSON)] = [("event", "unload"), ("pid", .int(Int64(pid))), ("library", record.json),
                                        ("outcome", .string(outcome.rawValue))]
        if let message { fields.append(("message", .string(message))) }
        return .object(fields)
    }
}

extension LibraryStatus {
    public func json(pid: Int32) -> JSON {
        .object([("event", "library-status"), ("pid", .int(Int64(pid))), ("library", record.json), ("state", .string(state)),
                 ("used_by", .array(usedBy.map { .int(Int64($0)) }))])
    }
}

extension GOTPatchOutcome {
    /// A `patch` event with `kind` `got`.
    public var json: JSON {
        var fields: [(String, JSON)] = [("event", "patch"), ("dry_run", .bool(dryRun)), ("pid", .int(Int64(plan.instance.pid)))]
        if let record { fields.append(("id", .int(Int64(record.id)))) }
        fields += [
            ("address", .string(hex(plan.slot))), ("function", .string("\(plan.module)!\(plan.symbol)@got")), ("module", .string(plan.modulePath)),
            ("kind", "got"), ("symbol", .string(plan.symbol)), ("relocation", .string(plan.relocation)), ("bound", .bool(plan.bound)),
            ("original", .string(plan.original.description)), ("original_address", .string(hex(plan.original.address))),
            ("target", .string(plan.target.description)), ("target_address", .string(hex(plan.target.address))),
            ("original_bytes", .string(hexString(plan.originalBytes))), ("new_bytes", .string(hexString(plan.newBytes))),
            ("checks", .array(plan.checks.map { .string($0) })),
        ]
        if let library = plan.library {
            fields.append(("library", .object([("path", .string(library.path)), ("build_id", library.buildID.map { .string($0) } ?? .null),
                                               ("base", .string(library.base))])))
        }
        if let pointer = plan.originalPointer, let symbol = plan.originalPointerSymbol {
            fields += [("original_pointer", .string(hex(pointer))), ("original_pointer_symbol", .string(symbol))]
        }
        if !dryRun { fields.append(("stop_window_ns", .uint(stopWindowNanoseconds))) }
        return .object(fields)
    }
}

extension VTablePatchOutcome {
    /// A `patch` event with `kind` `vtable`.
    public var json: JSON {
        var fields: [(String, JSON)] = [("event", "patch"), ("dry_run", .bool(dryRun)), ("pid", .int(Int64(plan.instance.pid)))]
        if let record { fields.append(("id", .int(Int64(record.id)))) }
        fields += [
            ("address", .string(hex(plan.slot))), ("function", .string("\(plan.className)::vtable[\(plan.slotIndex)] (\(plan.method))")),
            ("module", .string(plan.modulePath)), ("kind", "vtable"), ("class", .string(plan.className)), ("vtable", .string(plan.vtableSymbol)),
            ("slot", .int(Int64(plan.slotIndex))), ("method", .string(plan.method)), ("original_address", .string(hex(plan.currentValue))),
            ("target", .string(plan.target.description)), ("target_address", .string(hex(plan.target.address))),
            ("original_bytes", .string(hexString(plan.originalBytes))), ("new_bytes", .string(hexString(plan.newBytes))),
            ("not_changed", .array(plan.notChanged.map { .string($0) })), ("checks", .array(plan.checks.map { .string($0) })),
        ]
        if let pointer = plan.originalPointer, let symbol = plan.originalPointerSymbol {
            fields += [("original_pointer", .string(hex(pointer))), ("original_pointer_symbol", .string(symbol))]
        }
        if !dryRun { fields.append(("stop_window_ns", .uint(stopWindowNanoseconds))) }
        return .object(fields)
    }
}
