import GraftCore

/// The named decoders of `LibcPrototypes` (`DebugType.Kind.decoded`): x86_64 Linux values, as
/// strace and ltrace print them.
enum ArgumentFlags {
    /// `O_RDONLY|O_CLOEXEC`: the access mode, then each flag, then any bits left in hex.
    static func openFlags(_ value: UInt64) -> String {
        let modes = ["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"]
        var parts = [modes[Int(value & 3)]]
        var rest = value & ~3
        // O_SYNC includes O_DSYNC, O_TMPFILE includes O_DIRECTORY: the wider ones first.
        let flags: [(UInt64, String)] = [
            (0o4010000, "O_SYNC"), (0o20200000, "O_TMPFILE"), (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"),
            (0o1000, "O_TRUNC"), (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"),
            (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (0o200000, "O_DIRECTORY"), (0o400000, "O_NOFOLLOW"),
            (0o1000000, "O_NOATIME"), (0o2000000, "O_CLOEXEC"), (0o10000000, "O_PATH"),
        ]
        for (bits, name) in flags where rest & bits == bits {
            parts.append(name)
            rest &= ~bits
        }
        if rest != 0 { parts.append(hex(rest)) }
        return parts.joined(separator: "|")
    }

    /// Bits by name, `0` (or `none`) when there are none, leftover bits in hex.
    static func bits(_ value: UInt64, _ names: [(UInt64, String)], none: String = "0") -> String {
        var parts: [String] = []
        var rest = value
        for (bits, name) in names where bits != 0 && rest & bits == bits {
            parts.append(name)
            rest &= ~bits
        }
        if rest != 0 { parts.append(hex(rest)) }
        return parts.isEmpty ? none : parts.joined(separator: "|")
    }

    static let signalNames = ["0", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
                              "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP",
                              "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH",
                              "SIGIO", "SIGPWR", "SIGSYS"]

    static let families: [UInt64: String] = [0: "AF_UNSPEC", 1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"]

    /// The text for decoder `name` of `value` (`sockaddr` reads the target through `read`).
    static func decode(_ name: String, _ value: UInt64, read: (UInt64, Int) -> [UInt8]?) -> String {
        switch name {
        case "open_flags": return openFlags(value)
        case "mode": return "0" + String(value, radix: 8)
        case "whence": return ["SEEK_SET", "SEEK_CUR", "SEEK_END", "SEEK_DATA", "SEEK_HOLE"][safe: Int(value)] ?? String(value)
        case "mmap_prot":
            return bits(value, [(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC")], none: "PROT_NONE")
        case "mmap_flags":
            let kind = ["0", "MAP_SHARED", "MAP_PRIVATE", "MAP_SHARED_VALIDATE"][Int(value & 3)]
            let rest = bits(value & ~3, [(0x10, "MAP_FIXED"), (0x20, "MAP_ANONYMOUS"), (0x100, "MAP_GROWSDOWN"), (0x4000, "MAP_NORESERVE"),
                                         (0x8000, "MAP_POPULATE"), (0x10000, "MAP_NONBLOCK"), (0x20000, "MAP_STACK"), (0x40000, "MAP_HUGETLB"),
                                         (0x100000, "MAP_FIXED_NOREPLACE")])
            return rest == "0" ? kind : "\(kind)|\(rest)"
        case "address_family": return families[value] ?? String(value)
        case "socket_type":
            let kinds: [UInt64: String] = [1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 5: "SOCK_SEQPACKET"]
            var parts = kinds[value & 0xf].map { [$0] } ?? (value & 0xf == 0 ? [] : [String(value & 0xf)])
            let rest = bits(value & ~0xf, [(0o4000, "SOCK_NONBLOCK"), (0o2000000, "SOCK_CLOEXEC")])
            if rest != "0" { parts.append(rest) }
            return parts.isEmpty ? "0" : parts.joined(separator: "|")
        case "msg_flags":
            return bits(value, [(1, "MSG_OOB"), (2, "MSG_PEEK"), (4, "MSG_DONTROUTE"), (0x20, "MSG_TRUNC"), (0x40, "MSG_DONTWAIT"),
                                (0x80, "MSG_EOR"), (0x100, "MSG_WAITALL"), (0x4000, "MSG_NOSIGNAL"), (0x8000, "MSG_MORE")])
        case "signal": return signalNames[safe: Int(value)] ?? (value >= 34 && value <= 64 ? "SIGRTMIN+\(value - 34)" : String(value))
        case "sockaddr": return sockaddr(at: value, read: read)
        case "output:ret", "output:str": return value == 0 ? "NULL" : hex(value)  // read at the return
        default: return hex(value)
        }
    }

    /// `{AF_INET, 127.0.0.1:8080}`, `{AF_INET6, [::1]:80}`, `{AF_UNIX, "/run/x.sock"}`; the address
    /// in hex when it cannot be read.
    static func sockaddr(at address: UInt64, read: (UInt64, Int) -> [UInt8]?) -> String {
        guard address != 0 else { return "NULL" }
        guard let head = read(address, 16), head.count == 16 else { return hex(address) }
        let family = UInt64(head[0]) | UInt64(head[1]) << 8
        let port = Int(head[2]) << 8 | Int(head[3])
        switch family {
        case 2:
            return "{AF_INET, \(head[4]).\(head[5]).\(head[6]).\(head[7]):\(port)}"
        case 10:
            guard let full = read(address, 28), full.count == 28 else { return "{AF_INET6} at \(hex(address))" }
            let groups = stride(from: 8, to: 24, by: 2).map { String(Int(full[$0]) << 8 | Int(full[$0 + 1]), radix: 16) }
            return "{AF_INET6, [\(compress(groups))]:\(port)}"
        case 1:
            let path = read(address + 2, 108) ?? []
            if path.first == 0 {  // abstract: no NUL terminator counts
                let name = path.dropFirst().prefix { $0 != 0 }
                return "{AF_UNIX, \"@\(ArgumentValue.escape(Array(name), quote: UInt8(ascii: "\"")))\"}"
            }
            return "{AF_UNIX, \"\(ArgumentValue.escape(Array(path.prefix { $0 != 0 }), quote: UInt8(ascii: "\"")))\"}"
        default:
            return "{\(families[family] ?? "family \(family)")} at \(hex(address))"
        }
    }

    /// The longest run of zero groups as `::` (RFC 5952).
    static func compress(_ groups: [String]) -> String {
        var best = (start: -1, length: 0)
        var i = 0
        while i < groups.count {
            if groups[i] == "0" {
                var j = i
                while j < groups.count && groups[j] == "0" { j += 1 }
                if j - i > best.length && j - i > 1 { best = (i, j - i) }
                i = j
            } else {
                i += 1
            }
        }
        guard best.start >= 0 else { return groups.joined(separator: ":") }
        let left = groups[..<best.start].joined(separator: ":")
        let right = groups[(best.start + best.length)...].joined(separator: ":")
        return "\(left)::\(right)"
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { index >= 0 && index < count ? self[index] : nil }
}
