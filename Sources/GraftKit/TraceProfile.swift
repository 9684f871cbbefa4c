import GraftCore

/// A function as a trace names it: the module's basename and the symbol; without a symbol (a
/// stripped static function) the module and where the function starts.
public struct TraceFunction: Sendable, Hashable {
    public let module: String?
    public let name: String?
    /// Runtime address of the function's first byte: the symbol's; without one, the start of the
    /// `.eh_frame` function around it, else the first address the trace saw in that module's unnamed
    /// code; 0 for nothing at all.
    public let start: UInt64
    /// Runtime address of the module's first mapped byte (what `module+0xOFF` counts from).
    public let moduleStart: UInt64

    public init(module: String?, name: String?, start: UInt64, moduleStart: UInt64 = 0) {
        self.module = module
        self.name = name
        self.start = start
        self.moduleStart = moduleStart
    }

    /// `module!name`; without a symbol `module+0xOFF` (the function's start: a LOCATION graft
    /// accepts), `0x…` in memory no file backs, `??` for nothing known.
    public var displayName: String {
        switch (module, name) {
        case (let module?, let name?): return "\(module)!\(name)"
        case (nil, let name?): return name
        default: return unnamed
        }
    }

    /// The frame name in folded stacks and flame graphs: the bare function name (as perf script and
    /// flamegraph.pl show it); without a symbol the same `module+0xOFF` as `displayName`.
    public var foldedName: String { name ?? unnamed }

    /// The `function` of trace JSON (steps, the summary's functions and tree): the symbol; without
    /// one the same `module+0xOFF` (`0x…` outside any file) as `displayName`; nil only when nothing
    /// is known (an address in no mapping), which text prints as `??`.
    public var jsonName: String? { name ?? (module == nil && start == 0 ? nil : unnamed) }

    private var unnamed: String {
        if let module { return start == 0 ? "\(module)+0x0" : "\(module)+\(hex(start &- moduleStart))" }
        return start == 0 ? "??" : hex(start)
    }
}

/// Per-function figures of a trace. `selfCount` and `total` count instructions: `total` is every
/// instruction executed while the function was on the shadow call stack (callees included), each
/// counted once even under recursion.
public struct TraceFunctionStats: Sendable, Equatable {
    public let function: TraceFunction
    public let calls: UInt64
    public let selfCount: UInt64
    public let total: UInt64
    /// Calls that ran at full speed under `--depth` (their instructions are not counted).
    public let steppedOver: UInt64
}

/// One node of the call tree: a function reached through one particular chain of callers.
public struct TraceTreeNode: Sendable {
    public let function: Int
    public let parent: Int
    public internal(set) var calls: UInt64 = 0
    public internal(set) var selfCount: UInt64 = 0
    public internal(set) var steppedOver: UInt64 = 0
    public internal(set) var children: [Int: Int] = [:]
}

/// The shadow call stack of one traced thread and everything attributed to it.
///
/// Fed one executed instruction at a time (`count`), and the control transfers that change the stack
/// (`enter`, `ret`, `tailJump`). Each instruction goes to the call-tree node of the current stack:
/// the node of the innermost frame, or — when the pc is in another function than that frame's and no
/// call brought it there (a PLT stub, a signal trampoline, code falling into the next symbol) — a
/// child node of it with no call. The call tree, folded stacks and per-function totals all come from
/// the nodes' self counts at the end, so a step costs a dictionary lookup at most.
public final class TraceProfile: @unchecked Sendable {
    public private(set) var functions: [TraceFunction] = []
    private var functionIndex: [TraceFunction: Int] = [:]
    /// Node 0 is the virtual root (function -1) above every outermost frame.
    public private(set) var nodes: [TraceTreeNode] = [TraceTreeNode(function: -1, parent: -1)]

    struct Frame {
        var node: Int
        let returnAddress: UInt64
        /// rsp right after the call pushed the return address (0 when unknown: seeded frames).
        let entryRSP: UInt64
        /// A call into code without a symbol: its call is counted once we know where it goes (a PLT
        /// stub jumps on to the real function, which then gets the call).
        var provisional: Bool
    }
    private(set) var frames: [Frame] = []
    /// Instructions attributed so far.
    public private(set) var instructions: UInt64 = 0

    private var cachedTop = -1
    private var cachedFunction = -1
    private var cachedNode = -1

    public init() {}

    /// The index of `function`, added on first sight.
    public func intern(_ function: TraceFunction) -> Int {
        if let index = functionIndex[function] { return index }
        functions.append(function)
        functionIndex[function] = functions.count - 1
        return functions.count - 1
    }

    /// Frames on the shadow stack.
    public var depth: Int { frames.count }

    /// The function of the innermost frame, if any.
    public var topFunction: Int? { frames.last.map { nodes[$0.node].function } }

    private func child(of parent: Int, _ function: Int) -> Int {
        if let existing = nodes[parent].children[function] { return existing }
        nodes.append(TraceTreeNode(function: function, parent: parent))
        let index = nodes.count - 1
        nodes[parent].children[function] = index
        return index
    }

    /// Frames already on the stack when tracing starts (outermost first): no calls are counted.
    public func seed(_ stack: [(function: Int, returnAddress: UInt64)]) {
        for entry in stack {
            let parent = frames.last?.node ?? 0
            frames.append(Frame(node: child(of: parent, entry.function), returnAddress: entry.returnAddress, entryRSP: 0, provisional: false))
        }
    }

    /// One executed instruction of `function`.
    @inline(__always)
    public func count(_ function: Int) {
        instructions &+= 1
        let top = frames.last?.node ?? 0
        if top == cachedTop && function == cachedFunction {
            nodes[cachedNode].selfCount &+= 1
            return
        }
        let node = nodes[top].function == function ? top : child(of: top, function)
        cachedTop = top
        cachedFunction = function
        cachedNode = node
        nodes[node].selfCount &+= 1
    }

    private func finalizeTop() {
        guard let last = frames.indices.last, frames[last].provisional else { return }
        frames[last].provisional = false
        nodes[frames[last].node].calls &+= 1
    }

    /// A call (or a signal handler's entry) to `function`; `counted` false for code without a symbol
    /// (see `Frame.provisional`).
    public func enter(_ function: Int, returnAddress: UInt64, entryRSP: UInt64, counted: Bool = true) {
        finalizeTop()
        let parent = frames.last?.node ?? 0
        let node = child(of: parent, function)
        if counted { nodes[node].calls &+= 1 }
        frames.append(Frame(node: node, returnAddress: returnAddress, entryRSP: entryRSP, provisional: !counted))
    }

    /// A call graft let run at full speed (`--depth`): counted as a call, its instructions not.
    public func steppedOver(_ function: Int) {
        finalizeTop()
        let node = child(of: frames.last?.node ?? 0, function)
        nodes[node].calls &+= 1
        nodes[node].steppedOver &+= 1
    }

    /// A `ret` that landed at `pc`: pops down to the innermost frame that returns there. A return
    /// to no frame's address (stack switching, longjmp into a frame graft never saw) pops one frame.
    /// Returns the number of frames popped.
    @discardableResult
    public func ret(to pc: UInt64) -> Int {
        guard !frames.isEmpty else { return 0 }
        var popped = 0
        if let match = frames.lastIndex(where: { $0.returnAddress == pc }) {
            while frames.count > match {
                finalizeTop()
                frames.removeLast()
                popped += 1
            }
        } else {
            finalizeTop()
            frames.removeLast()
            popped = 1
        }
        return popped
    }

    /// A jump from the innermost frame's function to the start of `function`: a tail call. The frame
    /// now belongs to `function` (which gets the call); the jumping function's call is over.
    public func tailJump(_ function: Int) {
        guard let last = frames.indices.last else {
            frames.append(Frame(node: child(of: 0, function), returnAddress: 0, entryRSP: 0, provisional: false))
            return
        }
        let parent = nodes[frames[last].node].parent
        let node = child(of: parent, function)
        nodes[node].calls &+= 1
        frames[last].node = node
        frames[last].provisional = false
    }

    /// Drops the frames above `depth` (their thread is gone).
    public func truncate(to depth: Int) {
        while frames.count > depth {
            finalizeTop()
            frames.removeLast()
        }
    }

    /// A new outermost frame (the trace returned out of every frame it knew).
    public func enterRoot(_ function: Int) {
        frames.append(Frame(node: child(of: 0, function), returnAddress: 0, entryRSP: 0, provisional: false))
    }

    /// The innermost frame's expected return address and entry rsp.
    var top: (returnAddress: UInt64, entryRSP: UInt64)? { frames.last.map { ($0.returnAddress, $0.entryRSP) } }

    /// The call chain of a node, outermost first (function indices).
    public func path(_ node: Int) -> [Int] {
        var chain: [Int] = []
        var at = node
        while at > 0 {
            chain.append(nodes[at].function)
            at = nodes[at].parent
        }
        return chain.reversed()
    }

    // MARK: - Results

    /// Instructions of every node's subtree (the node's own plus its descendants').
    private func subtreeCounts() -> [UInt64] {
        var sums = nodes.map(\.selfCount)
        // Children always come after their parent in `nodes`: one backward pass adds them up.
        for index in stride(from: nodes.count - 1, to: 0, by: -1) {
            let parent = nodes[index].parent
            if parent >= 0 { sums[parent] &+= sums[index] }
        }
        return sums
    }

    /// Per-function figures, most instructions (total, then self) first.
    public func functionStats() -> [TraceFunctionStats] {
        let subtree = subtreeCounts()
        var calls = [UInt64](repeating: 0, count: functions.count)
        var selfCounts = calls, totals = calls, over = calls
        for (index, node) in nodes.enumerated() where index > 0 {
            calls[node.function] &+= node.calls
            selfCounts[node.function] &+= node.selfCount
            over[node.function] &+= node.steppedOver
            // A node's subtree counts towards its function's total unless an ancestor is the same
            // function (recursion: those instructions are in the ancestor's subtree already).
            var ancestor = node.parent
            var nested = false
            while ancestor > 0 {
                if nodes[ancestor].function == node.function { nested = true; break }
                ancestor = nodes[ancestor].parent
            }
            if !nested { totals[node.function] &+= subtree[index] }
        }
        return functions.indices.map {
            TraceFunctionStats(function: functions[$0], calls: calls[$0], selfCount: selfCounts[$0], total: totals[$0], steppedOver: over[$0])
        }.filter { $0.calls > 0 || $0.selfCount > 0 || $0.total > 0 }
        .sorted { ($0.total, $0.selfCount, $0.function.displayName) > ($1.total, $1.selfCount, $1.function.displayName) }
    }

    /// Folded stacks: one entry per node with instructions of its own.
    public func foldedStacks() -> [FoldedStack] {
        nodes.indices.dropFirst().compactMap { index in
            guard nodes[index].selfCount > 0 else { return nil }
            return FoldedStack(frames: path(index).map { functions[$0].foldedName }, count: nodes[index].selfCount)
        }.sorted { $0.frames.lexicographicallyPrecedes($1.frames) }
    }

    /// The call tree as lines: depth, node, subtree instructions; depth-first, children by instructions.
    public func treeLines() -> [(depth: Int, node: TraceTreeNode, total: UInt64)] {
        let subtree = subtreeCounts()
        var lines: [(Int, TraceTreeNode, UInt64)] = []
        func visit(_ index: Int, _ depth: Int) {
            if index > 0 { lines.append((depth, nodes[index], subtree[index])) }
            let children = nodes[index].children.values.sorted {
                (subtree[$0], nodes[$0].calls, functions[nodes[$1].function].displayName) >
                (subtree[$1], nodes[$1].calls, functions[nodes[$0].function].displayName)
            }
            for child in children { visit(child, index == 0 ? 0 : depth + 1) }
        }
        visit(0, 0)
        return lines
    }
}
