import CYaml
import GraftCore
import Glibc

/// A patch file: the patches of one process written down (`graft export`) to be applied to others
/// (`graft apply`), on this host or a fleet's, kept in version control. YAML, read with libyaml
/// (docs/service.md says why YAML and why libyaml). One entry per patch:
///
/// ```yaml
/// graft: 1
/// patches:
///   - location: "prefork_server!handle"      # MODULE!FUNCTION[+0xOFFSET], as graft prints it
///     module: "prefork_server"               # the mapped file's name
///     build_id: "3f1c…"                      # its GNU build-id: apply needs the same
///     kind: "return"                         # or "jump"
///     return_value: 7                        # return: the value
///     target: "prefork_server!value_b"       # jump: where to (or, with library, its symbol)
///     library: "/opt/fix/libfix.so"          # jump into a library graft loads first
///     library_build_id: "…"
///     original: "55 48 89 e5 8b 05"          # the file's bytes there: apply refuses others
///     new: "b8 07 00 00 00 c3"               # what graft wrote (a jump's depend on addresses)
///   - location: "got_lazy!write@got"          # a GOT slot (`patch --got got_lazy:write`)
///     module: "got_lazy"                     # the importing module, with its build_id
///     kind: "got"
///     symbol: "write"
///     target: "logged_write"                 # with library/library_build_id as for a jump
///     original: "libc.so.6!write"            # what the slot's word led to: apply refuses another
///   - location: "shapes::Circle::vtable[2] (shapes::Circle::area() const)"
///     module: "shapes"                       # the vtable's module, with its build_id
///     kind: "vtable"
///     class: "shapes::Circle"
///     slot: 2
///     method: "shapes::Circle::area() const" # what the slot holds (as graft names it)
///     target: "fast_area"
///     original: "shapes!shapes::Circle::area() const"
/// ```
///
/// A slot's word is an address, which differs from process to process: the file keeps the
/// function it leads to (a LOCATION), and apply compares that.
public struct PatchFile: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var location: String
        public var module: String
        public var buildID: String?
        public var kind: String
        public var returnValue: Int64?
        public var target: String?
        public var library: String?
        public var libraryBuildID: String?
        public var original: [UInt8]
        public var new: [UInt8]
        /// `got`: the imported symbol. `vtable`: the class, the slot's index and its method's name.
        public var symbol: String?
        public var className: String?
        public var slot: Int?
        public var method: String?
        /// `got`, `vtable`: the function the slot's original word leads to (`original` in the file;
        /// `original`/`new` bytes are empty for these kinds).
        public var originalFunction: String?

        /// A GOT or vtable entry: one word, not bytes of code.
        public var isWordPatch: Bool { kind == "got" || kind == "vtable" }

        public init(location: String, module: String, buildID: String?, kind: String, returnValue: Int64? = nil, target: String? = nil,
                    library: String? = nil, libraryBuildID: String? = nil, original: [UInt8], new: [UInt8]) {
            self.location = location; self.module = module; self.buildID = buildID; self.kind = kind
            self.returnValue = returnValue; self.target = target; self.library = library; self.libraryBuildID = libraryBuildID
            self.original = original; self.new = new
        }

        /// What the entry does, for messages: `prefork_server!handle: return 7`.
        public var summary: String {
            switch kind {
            case "return": return "\(location): return \(returnValue ?? 0)"
            case "got", "vtable": return "\(location): calls \(target ?? "?")\(library.map { " in \($0)" } ?? "") instead of \(originalFunction ?? "?")"
            default: return "\(location): jump to \(target ?? "?")\(library.map { " in \($0)" } ?? "")"
            }
        }
    }

    public var entries: [Entry]
    public init(entries: [Entry]) { self.entries = entries }

    // MARK: - Writing

    /// The file's text: a comment saying where it came from, then the entries.
    public func yaml(comment: String) -> String {
        var text = comment.split(separator: "\n", omittingEmptySubsequences: false).map { "# \($0)" }.joined(separator: "\n") + "\n"
        text += "graft: 1\n"
        if entries.isEmpty { return text + "patches: []\n" }
        text += "patches:\n"
        for entry in entries {
            var fields: [(String, String)] = [("location", quoted(entry.location)), ("module", quoted(entry.module))]
            if let buildID = entry.buildID { fields.append(("build_id", quoted(buildID))) }
            fields.append(("kind", quoted(entry.kind)))
            if let symbol = entry.symbol { fields.append(("symbol", quoted(symbol))) }
            if let className = entry.className { fields.append(("class", quoted(className))) }
            if let slot = entry.slot { fields.append(("slot", String(slot))) }
            if let method = entry.method { fields.append(("method", quoted(method))) }
            if let value = entry.returnValue { fields.append(("return_value", String(value))) }
            if let target = entry.target { fields.append(("target", quoted(target))) }
            if let library = entry.library { fields.append(("library", quoted(library))) }
            if let id = entry.libraryBuildID { fields.append(("library_build_id", quoted(id))) }
            if entry.isWordPatch {
                fields.append(("original", quoted(entry.originalFunction ?? "")))
            } else {
                fields.append(("original", quoted(hexBytes(entry.original))))
                fields.append(("new", quoted(hexBytes(entry.new))))
            }
            for (index, (key, value)) in fields.enumerated() {
                text += (index == 0 ? "  - " : "    ") + key + ": " + value + "\n"
            }
        }
        return text
    }

    /// A YAML double-quoted scalar: `"` and `\` escaped, control characters as \xNN.
    func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\x" + (hex.count < 2 ? "0" + hex : hex)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    // MARK: - Reading

    /// Parses a patch file; every problem is one `patch file PATH: …` error with the line.
    public static func parse(_ text: String, path: String) throws -> PatchFile {
        func fail(_ reason: String) -> GraftError { GraftError.usage("patch file \(path): \(reason)") }
        let root = try YAMLNode.load(text, fail: fail)
        guard case .mapping(let top, _) = root else { throw fail("expected a mapping with `graft: 1` and `patches:`") }
        guard let version = top.first(where: { $0.0 == "graft" })?.1.scalar else { throw fail("no `graft: 1` line (not a graft patch file?)") }
        guard version == "1" else { throw fail("graft: \(version) is a format this graft does not know (it reads 1)") }
        for (key, node) in top where key != "graft" && key != "patches" {
            throw fail("line \(node.line): unknown key `\(key)` (a patch file has `graft` and `patches`)")
        }
        guard let list = top.first(where: { $0.0 == "patches" })?.1 else { throw fail("no `patches:` list") }
        var entries: [Entry] = []
        let items: [YAMLNode]
        switch list {
        case .sequence(let nodes, _): items = nodes
        case .scalar(let value, _, _) where value.isEmpty: items = []
        default: throw fail("line \(list.line): `patches` must be a list")
        }
        let known: Set<String> = ["location", "module", "build_id", "kind", "return_value", "target", "library", "library_build_id", "original", "new",
                                   "symbol", "class", "slot", "method"]
        for (number, item) in items.enumerated() {
            guard case .mapping(let pairs, let line) = item else { throw fail("line \(item.line): patch \(number + 1) is not a mapping") }
            let name = "patch \(number + 1) (line \(line))"
            var fields: [String: String] = [:]
            for (key, node) in pairs {
                guard known.contains(key) else { throw fail("\(name): unknown key `\(key)`") }
                guard let value = node.scalar else { throw fail("\(name): `\(key)` must be a single value") }
                fields[key] = value
            }
            func required(_ key: String) throws -> String {
                guard let value = fields[key], !value.isEmpty else { throw fail("\(name): no `\(key)`") }
                return value
            }
            func bytes(_ key: String) throws -> [UInt8] {
                let text = try required(key).split(separator: " ").joined()
                guard let value = GraftCore.bytes(fromHex: text), !value.isEmpty else { throw fail("\(name): `\(key)` is not hex bytes (\"55 48 89 e5\")") }
                return value
            }
            let kind = try required("kind")
            let word = kind == "got" || kind == "vtable"
            var entry = Entry(location: try required("location"), module: try required("module"), buildID: fields["build_id"], kind: kind,
                              original: word ? [] : try bytes("original"), new: word ? [] : try bytes("new"))
            if entry.original.count != entry.new.count { throw fail("\(name): \(entry.original.count) original bytes but \(entry.new.count) new ones") }
            if word {
                if fields["new"] != nil { throw fail("\(name): a \(kind) patch has no `new` bytes (its word is the target's address, per process)") }
                entry.originalFunction = try required("original")
                entry.target = try required("target")
                entry.library = fields["library"]
                entry.libraryBuildID = fields["library_build_id"]
            }
            switch kind {
            case "return":
                guard let text = fields["return_value"], let value = Int64(text) else { throw fail("\(name): a return patch needs `return_value: INT`") }
                entry.returnValue = value
            case "jump":
                entry.target = try required("target")
                entry.library = fields["library"]
                entry.libraryBuildID = fields["library_build_id"]
            case "got":
                entry.symbol = try required("symbol")
            case "vtable":
                entry.className = try required("class")
                guard let text = fields["slot"], let slot = Int(text), slot >= 0 else { throw fail("\(name): a vtable patch needs `slot: N` (the slot's index)") }
                entry.slot = slot
                entry.method = fields["method"]
            default:
                throw fail("\(name): kind `\(kind)` is not one graft applies (return, jump, got, vtable)")
            }
            entries.append(entry)
        }
        return PatchFile(entries: entries)
    }
}

/// A YAML document as libyaml's loader builds it: scalars (as text), sequences, mappings with
/// scalar keys; each with its line for messages.
indirect enum YAMLNode {
    case scalar(String, line: Int, plain: Bool)
    case sequence([YAMLNode], line: Int)
    case mapping([(String, YAMLNode)], line: Int)

    var line: Int {
        switch self {
        case .scalar(_, let line, _), .sequence(_, let line), .mapping(_, let line): return line
        }
    }

    var scalar: String? {
        if case .scalar(let value, _, let plain) = self { return plain && (value == "~" || value == "null") ? nil : value }
        return nil
    }

    /// The first document of `text` (libyaml's `yaml_parser_load`); an empty text is an empty scalar.
    static func load(_ text: String, fail: (String) -> GraftError) throws -> YAMLNode {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) != 0 else { throw fail("libyaml could not start (out of memory)") }
        defer { yaml_parser_delete(&parser) }
        var bytes = Array(text.utf8)
        var document = yaml_document_t()
        let loaded = bytes.withUnsafeMutableBufferPointer { buffer -> Int32 in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            return yaml_parser_load(&parser, &document)
        }
        guard loaded != 0 else {
            throw fail("line \(graft_yaml_problem_line(&parser)), column \(graft_yaml_problem_column(&parser)): \(String(cString: graft_yaml_problem(&parser)))")
        }
        defer { yaml_document_delete(&document) }
        guard let root = yaml_document_get_root_node(&document) else { return .scalar("", line: 1, plain: true) }
        var depth = 0
        func convert(_ node: UnsafeMutablePointer<yaml_node_t>) throws -> YAMLNode {
            depth += 1
            defer { depth -= 1 }
            if depth > 64 { throw fail("line \(graft_yaml_node_line(node)): nested too deeply") }
            let line = Int(graft_yaml_node_line(node))
            switch graft_yaml_node_type(node) {
            case YAML_SCALAR_NODE:
                let buffer = UnsafeBufferPointer(start: graft_yaml_scalar_value(node), count: graft_yaml_scalar_length(node))
                return .scalar(String(decoding: buffer, as: UTF8.self), line: line, plain: graft_yaml_scalar_style(node) == YAML_PLAIN_SCALAR_STYLE)
            case YAML_SEQUENCE_NODE:
                var items: [YAMLNode] = []
                for i in 0..<graft_yaml_sequence_count(node) {
                    guard let item = yaml_document_get_node(&document, graft_yaml_sequence_item(node, i)) else { continue }
                    items.append(try convert(item))
                }
                return .sequence(items, line: line)
            case YAML_MAPPING_NODE:
                var pairs: [(String, YAMLNode)] = []
                for i in 0..<graft_yaml_mapping_count(node) {
                    guard let key = yaml_document_get_node(&document, graft_yaml_mapping_key(node, i)),
                          let value = yaml_document_get_node(&document, graft_yaml_mapping_value(node, i)) else { continue }
                    guard case .scalar(let name, _, _) = try convert(key) else { throw fail("line \(line): a mapping key must be a plain word") }
                    if pairs.contains(where: { $0.0 == name }) { throw fail("line \(graft_yaml_node_line(key)): `\(name)` appears twice") }
                    pairs.append((name, try convert(value)))
                }
                return .mapping(pairs, line: line)
            default:
                return .scalar("", line: line, plain: true)
            }
        }
        return try convert(root)
    }
}
