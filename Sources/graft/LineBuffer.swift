import Glibc

/// Lines for stdout, formatted into one reused byte buffer and written with write(2) when flushed:
/// the per-hit path of `graft hook` (and every line of `trace`) allocates nothing and takes no stdio
/// lock. Whoever also writes stdout through stdio (`print`) must `writeOut()` first.
final class LineBuffer {
    let fd: Int32
    let capacity: Int
    private let base: UnsafeMutablePointer<UInt8>
    private(set) var count = 0

    init(fd: Int32 = 1, capacity: Int = 1 << 16) {
        self.fd = fd
        self.capacity = capacity
        base = .allocate(capacity: capacity)
    }

    deinit {
        writeOut()
        base.deallocate()
    }

    var isEmpty: Bool { count == 0 }

    /// Room for `n` more bytes (writes the buffer out when they would not fit).
    @inline(__always)
    func reserve(_ n: Int) {
        if count &+ n > capacity { writeOut() }
    }

    @inline(__always)
    func append(_ byte: UInt8) {
        if count == capacity { writeOut() }
        base[count] = byte
        count &+= 1
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0 else { return }
        if count &+ n > capacity {
            writeOut()
            if n > capacity {  // too big to buffer: straight out
                writeAll(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
                return
            }
        }
        (base + count).update(from: bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n)
        count &+= n
    }

    func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    func append(_ text: String) {
        var text = text
        text.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// `value` in decimal, as `String(value)` writes it.
    @inline(__always)
    func appendDecimal(_ value: UInt64) {
        reserve(20)
        if value < 10 {
            base[count] = 0x30 &+ UInt8(truncatingIfNeeded: value)
            count &+= 1
            return
        }
        var digits = 0
        var v = value
        while v > 0 { digits &+= 1; v /= 10 }
        v = value
        var at = count &+ digits
        while v > 0 {
            at &-= 1
            base[at] = 0x30 &+ UInt8(truncatingIfNeeded: v % 10)
            v /= 10
        }
        count &+= digits
    }

    /// `value` in decimal, as `String(value)` writes it.
    @inline(__always)
    func appendDecimal(_ value: Int64) {
        if value < 0 {
            append(UInt8(ascii: "-"))
            appendDecimal(value.magnitude)
        } else {
            appendDecimal(UInt64(value))
        }
    }

    /// `0x` and lowercase hex digits, as GraftCore's `hex(_:)` writes it.
    @inline(__always)
    func appendHex(_ value: UInt64) {
        reserve(18)
        base[count] = 0x30
        base[count &+ 1] = 0x78
        count &+= 2
        let digits = value == 0 ? 1 : (67 &- value.leadingZeroBitCount) / 4
        var v = value
        var at = count &+ digits
        repeat {
            at &-= 1
            let nibble = UInt8(truncatingIfNeeded: v & 0xf)
            base[at] = nibble < 10 ? 0x30 &+ nibble : 0x57 &+ nibble
            v >>= 4
        } while at > count
        count &+= digits
    }

    /// `value` in decimal with at least `width` digits (leading zeros).
    @inline(__always)
    func appendPadded(_ value: UInt64, width: Int) {
        reserve(max(width, 20))
        var digits = 0
        var v = value
        repeat { digits &+= 1; v /= 10 } while v > 0
        var pad = width &- digits
        while pad > 0 { base[count] = 0x30; count &+= 1; pad &-= 1 }
        appendDecimal(value)
    }

    /// Writes everything buffered (retrying on EINTR and short writes); on an error the lines are dropped,
    /// as stdio drops them.
    func writeOut() {
        guard count > 0 else { return }
        writeAll(base, count)
        count = 0
    }

    private func writeAll(_ start: UnsafePointer<UInt8>, _ length: Int) {
        var done = 0
        while done < length {
            let n = write(fd, start + done, length - done)
            if n > 0 {
                done += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                var waiter = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&waiter, 1, -1)
            } else {
                return
            }
        }
    }
}

/// `HH:MM:SS.uuuuuu` local time into a buffer; localtime_r runs once per second, not once per line.
struct WallClockFormatter {
    private var second: Int64 = -1
    /// "HH:MM:SS." of `second`.
    private var prefix: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0)

    mutating func append(_ wallNanoseconds: UInt64, to out: LineBuffer) {
        let seconds = Int64(wallNanoseconds / 1_000_000_000)
        if seconds != second {
            var t = time_t(seconds)
            var parts = tm()
            localtime_r(&t, &parts)
            func digit(_ v: Int32) -> UInt8 { 0x30 &+ UInt8(truncatingIfNeeded: v) }
            // clock(_:) writes each field as "0\(v)" below 10, else "\(v)" (a leap second: 60).
            prefix = (digit(parts.tm_hour / 10), digit(parts.tm_hour % 10), 0x3a,
                      digit(parts.tm_min / 10), digit(parts.tm_min % 10), 0x3a,
                      digit(parts.tm_sec / 10), digit(parts.tm_sec % 10), 0x2e)
            second = seconds
        }
        out.reserve(9)
        withUnsafeBytes(of: &prefix) { out.append($0) }
        out.appendPadded((wallNanoseconds / 1_000) % 1_000_000, width: 6)
    }
}
