import CLibunwind
import GraftCore
import GraftELF

/// One frame of a backtrace: the pc, and where it is.
public struct BacktraceFrame: Sendable, Equatable {
    public let pc: UInt64
    public let module: String?
    public let function: String?
    /// pc - function start (0 without a function).
    public let offset: UInt64

    /// `module!function+0xoff`, `module+0xoff` without a symbol, `0x…` outside any file.
    public var description: String {
        guard let module else { return hex(pc) }
        guard let function else { return "\(module)+\(hex(offset))" }
        return "\(module)!\(function)" + (offset == 0 ? "" : "+\(hex(offset))")
    }

    /// In JSON (`hook`/`watch --backtrace`): `{"pc","module","function","offset"}`; code without a
    /// symbol has `"function":"module+0xOFF"` (the one spelling graft prints and takes back), null
    /// only outside any file.
    public var json: JSON {
        .object([("pc", .string(hex(pc))), ("module", module.map { .string($0) } ?? .null),
                 ("function", function.map { .string($0) } ?? (module != nil ? .string(description) : .null)), ("offset", .uint(offset))])
    }
}

/// Remote stack unwinding with libunwind-ptrace (`_UPT_*` accessors, .eh_frame), symbolized with
/// graft's own symbol index: libunwind's `unw_get_proc_name` costs ~0.5 ms per trace, a cached
/// lookup by address costs nothing. Runs on the tracer thread only (libunwind reads through ptrace).
final class RemoteUnwinder {
    private let space: unw_addr_space_t?
    private var contexts: [Int32: UnsafeMutableRawPointer] = [:]
    private let index: SymbolIndex
    private var names: [UInt64: (module: String?, function: String?, start: UInt64)] = [:]

    init(index: SymbolIndex) {
        self.index = index
        space = graft_unw_create_addr_space()
        if let space { _ = graft_unw_set_caching_policy(space) }
    }

    deinit {
        for context in contexts.values { _UPT_destroy(context) }
        if let space { graft_unw_destroy_addr_space(space) }
    }

    /// Up to `maxFrames` frames of stopped thread `tid`, innermost first. Callers' pcs are return
    /// addresses: they are symbolized at pc - 1 (the call), so a call that ends a function is not
    /// named after the next one.
    func backtrace(of tid: Int32, maxFrames: Int = 64) -> [BacktraceFrame] {
        guard let space else { return [] }
        let context: UnsafeMutableRawPointer
        if let cached = contexts[tid] {
            context = cached
        } else {
            guard let created = _UPT_create(tid) else { return [] }
            contexts[tid] = created
            context = created
        }
        var cursor = unw_cursor_t()
        guard graft_unw_init_remote(&cursor, space, context) == 0 else { return [] }
        var frames: [BacktraceFrame] = []
        var callerFrame = false
        while frames.count < maxFrames {
            var ip: unw_word_t = 0
            guard graft_unw_get_ip(&cursor, &ip) == 0, ip != 0 else { break }
            frames.append(symbolize(UInt64(ip), lookupAt: callerFrame ? UInt64(ip) - 1 : UInt64(ip)))
            // A signal frame's pc is where the signal hit, not a return address.
            callerFrame = graft_unw_is_signal_frame(&cursor) <= 0
            if graft_unw_step(&cursor) <= 0 { break }
        }
        return frames
    }

    /// Forgets a thread's libunwind context (the thread is gone).
    func forget(_ tid: Int32) {
        if let context = contexts.removeValue(forKey: tid) { _UPT_destroy(context) }
    }

    func symbolize(_ pc: UInt64, lookupAt: UInt64) -> BacktraceFrame {
        if let known = names[lookupAt] {
            return BacktraceFrame(pc: pc, module: known.module, function: known.function, offset: known.module == nil ? 0 : pc &- known.start)
        }
        let resolved = index.symbolize(lookupAt)
        let module = resolved?.module?.name
        let function = resolved?.symbol?.displayName
        let start = resolved?.symbolAddress ?? resolved?.module?.mappings.first?.start ?? 0
        names[lookupAt] = (module, function, start)
        let offset = module == nil ? 0 : pc &- start
        return BacktraceFrame(pc: pc, module: module, function: function, offset: offset)
    }
}
