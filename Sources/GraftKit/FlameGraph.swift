// Flame graphs from folded stacks, in the format and look of Brendan Gregg's flamegraph.pl.
// Standard library only (no Foundation): the output must be byte-for-byte deterministic and the
// file must build anywhere GraftKit builds.

/// One line of folded stacks: frames outermost first, and its weight (instructions).
public struct FoldedStack: Sendable, Equatable {
    public var frames: [String]
    public var count: UInt64

    public init(frames: [String], count: UInt64) {
        self.frames = frames
        self.count = count
    }
}

/// Folded stacks in and out, and a self-contained interactive flame graph SVG.
public enum FlameGraph {
    // MARK: - Folded text

    /// `main;parse;lex 1234` lines (the format flamegraph.pl, inferno and speedscope read), sorted.
    ///
    /// Identical stacks are merged (counts summed, saturating). Lines are sorted by byte order, as
    /// `LC_ALL=C sort` would, so the text diffs cleanly. Stacks without frames are left out (the
    /// format cannot express them). A frame's line breaks become spaces and its `;` become `:`,
    /// because either would change the stack when read back; everything else is written verbatim.
    public static func folded(_ stacks: [FoldedStack]) -> String {
        var merged: [String: UInt64] = [:]
        for stack in stacks where !stack.frames.isEmpty {
            let line = stack.frames.map(foldedFrame).joined(separator: ";")
            merged[line] = saturatingAdd(merged[line] ?? 0, stack.count)
        }
        var out = ""
        for (line, count) in merged.sorted(by: { byteOrder($0.key, $1.key) }) {
            out += line
            out += " "
            out += String(count)
            out += "\n"
        }
        return out
    }

    /// Parses folded text (the last space separates the count; frames split on ';'). Throws nothing: bad lines are skipped.
    ///
    /// Accepts `\n` and `\r\n` line ends, a tab as the separator, and fractional counts (rounded;
    /// some collapsers emit them). Skipped: blank lines, lines without a count, negative or
    /// non-numeric counts, and an empty stack. Lines are returned in input order, not merged.
    public static func parseFolded(_ text: String) -> [FoldedStack] {
        var stacks: [FoldedStack] = []
        // `Character.isNewline` also matches "\r\n", which is a single Character in Swift.
        for rawLine in text.split(whereSeparator: { $0.isNewline }) {
            let line = trimmed(rawLine)
            guard let separator = line.lastIndex(where: { $0 == " " || $0 == "\t" }) else { continue }
            let stackText = trimmed(line[..<separator])
            let countText = line[line.index(after: separator)...]
            guard !stackText.isEmpty, let count = parseCount(countText) else { continue }
            let frames = stackText.split(separator: ";", omittingEmptySubsequences: false).map(String.init)
            stacks.append(FoldedStack(frames: frames, count: count))
        }
        return stacks
    }

    // MARK: - SVG

    /// A self-contained SVG document (no external scripts or fonts): one rectangle per frame,
    /// width proportional to its inclusive weight, stacked bottom-up (root at the bottom),
    /// function names as text (truncated to fit, with "..", hidden when the box is too narrow),
    /// a <title> on each frame giving "name (N instructions, P%)" for hover, colour by a hash of the name (warm palette),
    /// a header with `title` and `subtitle`, and embedded JavaScript for zoom on click (click a frame: it fills the width,
    /// its ancestors stay, others hide/shrink; a "Reset zoom" control; optional search box is a bonus).
    ///
    /// Details:
    /// - Like flamegraph.pl, an `all` frame (the total) is the root; identical prefixes are merged
    ///   into one frame and siblings are ordered by name (byte order), so time runs nowhere: x
    ///   order is alphabetical.
    /// - Frames narrower than 0.1 px are not drawn (nor their children, which are narrower still),
    ///   but they still count in their ancestors' totals. So that every input name is still in the
    ///   document, names that appear only in such frames are listed in a `<desc>` element.
    /// - Text is XML-escaped (see `xmlEscaped`): a name containing `operator<` appears as
    ///   `operator&lt;`. Names never enter the script, so they cannot close its CDATA section.
    /// - Interactions: click a frame to zoom, "Reset zoom" or Escape to unzoom, "Search" takes a
    ///   regular expression, highlights matching frames and shows the share of the total they cover.
    /// - The hover text is cut at the last " (" of the `<title>` to recover the name when zooming,
    ///   so `unit` should be a plain word (it is escaped, but " (" in it would confuse the labels).
    /// - `width` is the image width in pixels (at least 100). Zero total weight gives a small
    ///   valid SVG saying "no samples".
    public static func svg(_ stacks: [FoldedStack], title: String, subtitle: String = "",
                           unit: String = "instructions", width: Int = 1200) -> String {
        let imageWidth = max(width, 100)
        let tree = Tree(stacks)
        let allNames = Set(stacks.lazy.flatMap { $0.frames })
        guard tree.nodes[0].total > 0 else {
            return emptySVG(title: title, subtitle: subtitle, width: imageWidth, notDrawn: allNames.sorted(by: byteOrder))
        }
        return frameSVG(tree, allNames: allNames, title: title, subtitle: subtitle, unit: unit, width: imageWidth)
    }

    /// `text` safe in XML character data and attribute values: `&`, `<`, `>`, `"` and `'` become
    /// entities, and characters XML 1.0 forbids (controls other than tab, LF, CR; U+FFFE, U+FFFF)
    /// become U+FFFD, since no escape can represent them. Tests can look for
    /// `xmlEscaped(name)` in the SVG.
    public static func xmlEscaped(_ text: String) -> String {
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
            default:
                if scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF {
                    out += "\u{FFFD}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    // MARK: - Layout (the numbers flamegraph.pl uses, so graphs look alike)

    private static let fontSize = 12.0
    /// Average glyph width as a fraction of the font size, to guess how many characters fit.
    private static let fontWidth = 0.59
    private static let frameHeight = 16.0
    private static let framePad = 1.0
    private static let xPad = 10.0
    private static let minWidth = 0.1
    private static let fontFamily = "Verdana, 'DejaVu Sans', sans-serif"
    private static var charWidth: Double { fontSize * fontWidth }

    /// The call tree: node 0 is the `all` root; children keyed by name so equal prefixes merge.
    private struct Tree {
        struct Node {
            var name: String
            var total: UInt64 = 0
            var children: [String: Int] = [:]
        }

        var nodes: [Node] = [Node(name: "all")]

        init(_ stacks: [FoldedStack]) {
            for stack in stacks where stack.count > 0 {
                nodes[0].total = saturatingAdd(nodes[0].total, stack.count)
                var current = 0
                for frame in stack.frames {
                    if let child = nodes[current].children[frame] {
                        current = child
                    } else {
                        nodes.append(Node(name: frame))
                        nodes[current].children[frame] = nodes.count - 1
                        current = nodes.count - 1
                    }
                    nodes[current].total = saturatingAdd(nodes[current].total, stack.count)
                }
            }
        }
    }

    /// A frame to draw: node, depth (root 0) and start offset in weight units from the left.
    private struct Placed {
        var node: Int
        var depth: Int
        var start: UInt64
    }

    private static func frameSVG(_ tree: Tree, allNames: Set<String>, title: String, subtitle: String,
                                 unit: String, width imageWidth: Int) -> String {
        let total = tree.nodes[0].total
        let drawWidth = Double(imageWidth) - 2 * xPad
        let scale = drawWidth / Double(total)

        // Pre-order walk with an explicit stack (a very deep stack must not overflow ours),
        // children pushed in reverse so they pop in name order, left to right.
        var placed: [Placed] = []
        var pending = [Placed(node: 0, depth: 0, start: 0)]
        var maxDepth = 0
        var drawnNames = Set<String>()
        while let item = pending.popLast() {
            let node = tree.nodes[item.node]
            guard Double(node.total) * scale >= minWidth else { continue }
            placed.append(item)
            maxDepth = max(maxDepth, item.depth)
            if item.node != 0 { drawnNames.insert(node.name) }
            var start = item.start
            var children: [Placed] = []
            children.reserveCapacity(node.children.count)
            for child in node.children.sorted(by: { byteOrder($0.key, $1.key) }).map(\.value) {
                children.append(Placed(node: child, depth: item.depth + 1, start: start))
                start = saturatingAdd(start, tree.nodes[child].total)
            }
            pending.append(contentsOf: children.reversed())
        }

        let yPad1 = fontSize * 3 + (subtitle.isEmpty ? 0 : fontSize * 2)
        let yPad2 = fontSize * 2 + 10
        let imageHeight = Double(maxDepth + 1) * frameHeight + yPad1 + yPad2
        let heightText = num(imageHeight)

        var out = ""
        out.reserveCapacity(placed.count * 200 + 8192)
        out += "<?xml version=\"1.0\" standalone=\"no\"?>\n"
        out += "<svg version=\"1.1\" width=\"\(imageWidth)\" height=\"\(heightText)\" "
        out += "viewBox=\"0 0 \(imageWidth) \(heightText)\" xmlns=\"http://www.w3.org/2000/svg\">\n"
        appendNotDrawn(allNames.subtracting(drawnNames).sorted(by: byteOrder), to: &out)
        out += """
            <defs>
            <linearGradient id="background" y1="0" y2="1" x1="0" x2="0">
            <stop stop-color="#eeeeee" offset="5%"/><stop stop-color="#eeeeb0" offset="95%"/>
            </linearGradient>
            </defs>
            <style type="text/css">
            text { font-family: \(fontFamily); font-size: \(num(fontSize))px; fill: #000000; }
            #title { font-size: \(num(fontSize + 5))px; text-anchor: middle; }
            #subtitle { text-anchor: middle; fill: #a0a0a0; }
            #unzoom, #search { cursor: pointer; }
            #search, #matched { text-anchor: end; }
            .f { cursor: pointer; }
            .f text { pointer-events: none; }
            .f:hover rect { stroke: #000000; stroke-width: 0.5; }
            .hide { display: none; }
            .parent { opacity: 0.5; }
            </style>

            """
        out += "<rect x=\"0\" y=\"0\" width=\"\(imageWidth)\" height=\"\(heightText)\" fill=\"url(#background)\"/>\n"
        appendHeader(title: title, subtitle: subtitle, width: imageWidth, to: &out)
        out += "<text id=\"unzoom\" class=\"hide\" x=\"\(num(xPad))\" y=\"\(num(fontSize * 2))\">Reset zoom</text>\n"
        out += "<text id=\"search\" x=\"\(num(Double(imageWidth) - xPad))\" y=\"\(num(fontSize * 2))\">Search</text>\n"
        out += "<text id=\"details\" x=\"\(num(xPad))\" y=\"\(num(imageHeight - yPad2 / 2))\"> </text>\n"
        out += "<text id=\"matched\" x=\"\(num(Double(imageWidth) - xPad))\" y=\"\(num(imageHeight - yPad2 / 2))\"> </text>\n"

        out += "<g id=\"frames\">\n"
        let escapedUnit = xmlEscaped(unit)
        for item in placed {
            let node = tree.nodes[item.node]
            let x = xPad + Double(item.start) * scale
            let w = Double(node.total) * scale
            let y = imageHeight - yPad2 - Double(item.depth + 1) * frameHeight + framePad
            let percent = fixed(Double(node.total) / Double(total) * 100, digits: 2)
            out += "<g class=\"f\" data-d=\"\(item.depth)\" data-s=\"\(item.start)\" data-n=\"\(node.total)\">"
            out += "<title>\(xmlEscaped(node.name)) (\(node.total) \(escapedUnit), \(percent)%)</title>"
            out += "<rect x=\"\(num(x))\" y=\"\(num(y))\" width=\"\(num(w))\" "
            out += "height=\"\(num(frameHeight - framePad))\" rx=\"2\" ry=\"2\" fill=\"\(colour(node.name))\"/>"
            out += "<text x=\"\(num(x + 3))\" y=\"\(num(y + 10.5))\">\(xmlEscaped(label(node.name, width: w)))</text>"
            out += "</g>\n"
        }
        out += "</g>\n"

        // Only numbers are interpolated into the script: it can never contain "]]>".
        out += "<script type=\"text/ecmascript\"><![CDATA[\n"
        out += "var fg = { xpad: \(num(xPad)), width: \(num(drawWidth)), total: \(total), charWidth: \(num(charWidth)) };\n"
        out += script
        out += "]]></script>\n"
        out += "</svg>\n"
        return out
    }

    private static func emptySVG(title: String, subtitle: String, width: Int, notDrawn: [String]) -> String {
        let height = 150
        var out = "<?xml version=\"1.0\" standalone=\"no\"?>\n"
        out += "<svg version=\"1.1\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" "
        out += "xmlns=\"http://www.w3.org/2000/svg\">\n"
        appendNotDrawn(notDrawn, to: &out)
        out += "<style type=\"text/css\">\n"
        out += "text { font-family: \(fontFamily); font-size: \(num(fontSize))px; fill: #000000; text-anchor: middle; }\n"
        out += "#title { font-size: \(num(fontSize + 5))px; }\n#subtitle { fill: #a0a0a0; }\n"
        out += "</style>\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(width)\" height=\"\(height)\" fill=\"#eeeeee\"/>\n"
        appendHeader(title: title, subtitle: subtitle, width: width, to: &out)
        out += "<text id=\"nosamples\" x=\"\(num(Double(width) / 2))\" y=\"100\">no samples</text>\n"
        out += "</svg>\n"
        return out
    }

    private static func appendHeader(title: String, subtitle: String, width: Int, to out: inout String) {
        let center = num(Double(width) / 2)
        out += "<text id=\"title\" x=\"\(center)\" y=\"\(num(fontSize * 2))\">\(xmlEscaped(title))</text>\n"
        if !subtitle.isEmpty {
            out += "<text id=\"subtitle\" x=\"\(center)\" y=\"\(num(fontSize * 4))\">\(xmlEscaped(subtitle))</text>\n"
        }
    }

    /// Names present only in frames too narrow to draw, one per line, so the document still
    /// names every function of its input (searchable as text, invisible in the picture).
    private static func appendNotDrawn(_ names: [String], to out: inout String) {
        guard !names.isEmpty else { return }
        out += "<desc id=\"notdrawn\">Functions only in frames narrower than \(num(minWidth)) px (not drawn):\n"
        for name in names {
            out += xmlEscaped(name)
            out += "\n"
        }
        out += "</desc>\n"
    }

    /// The label for a box `width` px wide: the name, cut to "prefix.." when it does not fit,
    /// empty when not even 3 characters fit. The script's `fit` does the same after a zoom.
    private static func label(_ name: String, width: Double) -> String {
        let room = (width - 3) / charWidth
        guard room >= 3 else { return "" }
        let chars = Int(room)
        if name.count <= chars { return name }
        return String(name.prefix(chars - 2)) + ".."
    }

    /// flamegraph.pl's "hot" palette (red to yellow), picked by a hash of the name so a function
    /// has the same colour in every graph. Not `Hasher`: it is seeded per process.
    private static func colour(_ name: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for byte in name.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        // splitmix64 finalizer: FNV's low bits barely change between short similar names.
        hash = (hash ^ (hash >> 30)) &* 0xbf58_476d_1ce4_e5b9
        hash = (hash ^ (hash >> 27)) &* 0x94d0_49bb_1331_11eb
        hash ^= hash >> 31
        func unit(_ shift: UInt64) -> Double { Double((hash >> shift) & 0xFFFF) / 65536 }
        let red = 205 + Int(50 * unit(0))
        let green = Int(230 * unit(16))
        let blue = Int(55 * unit(32))
        return "rgb(\(red),\(green),\(blue))"
    }

    // MARK: - Small helpers

    private static func saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : sum
    }

    /// Byte (UTF-8) order, like `LC_ALL=C sort` and Perl's `sort`: stable across platforms and
    /// locales, unlike `String.<`, which compares canonical Unicode forms.
    private static func byteOrder(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    private static func foldedFrame(_ frame: String) -> String {
        var out = ""
        for character in frame {
            if character.isNewline {
                out += " "
            } else if character == ";" {
                out += ":"
            } else {
                out.append(character)
            }
        }
        return out
    }

    private static func trimmed(_ text: Substring) -> Substring {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = text.firstIndex(where: { !isBlank($0) }),
              let last = text.lastIndex(where: { !isBlank($0) }) else { return "" }
        return text[first...last]
    }

    private static func parseCount(_ text: Substring) -> UInt64? {
        if let exact = UInt64(text) { return exact }
        guard let value = Double(text), value.isFinite, value >= 0 else { return nil }
        return value >= 18_446_744_073_709_549_568 ? .max : UInt64(value.rounded())
    }

    /// A coordinate: 2 decimals at most, trailing zeros dropped (smaller files, same picture).
    private static func num(_ value: Double) -> String {
        var text = fixed(value, digits: 2)
        guard text.contains(".") else { return text }
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }

    /// `value` with exactly `digits` decimals, rounded half away from zero (no Foundation `String(format:)`).
    private static func fixed(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return "0" }
        var power: UInt64 = 1
        for _ in 0..<digits { power *= 10 }
        let scaled = (value.magnitude * Double(power)).rounded()
        guard scaled < 9.0e18 else { return value < 0 ? "-" + String(UInt64(value.magnitude)) : String(UInt64(value)) }
        let units = UInt64(scaled)
        var text = (value < 0 && units != 0) ? "-" : ""
        text += String(units / power)
        if digits > 0 {
            let fraction = String(units % power)
            text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
        }
        return text
    }

    // MARK: - Script

    /// Zoom, search and hover details. Reads everything from the document (frame geometry from
    /// `data-d` depth, `data-s` start and `data-n` weight, names from `<title>`), so the only
    /// interpolated text is the numeric `fg` settings line written before it.
    private static let script = #"""
    (function () {
      "use strict";
      var frames = document.getElementById("frames");
      var details = document.getElementById("details");
      var unzoomButton = document.getElementById("unzoom");
      var searchButton = document.getElementById("search");
      var matchedText = document.getElementById("matched");
      var items = [];
      var searching = false;

      var groups = frames.getElementsByTagName("g");
      for (var i = 0; i < groups.length; i++) {
        var g = groups[i];
        var title = g.getElementsByTagName("title")[0].textContent;
        var cut = title.lastIndexOf(" (");
        var item = {
          g: g,
          rect: g.getElementsByTagName("rect")[0],
          text: g.getElementsByTagName("text")[0],
          title: title,
          name: cut >= 0 ? title.substring(0, cut) : title,
          d: Number(g.getAttribute("data-d")),
          s: Number(g.getAttribute("data-s")),
          n: Number(g.getAttribute("data-n"))
        };
        item.fill = item.rect.getAttribute("fill");
        g.fgItem = item;
        items.push(item);
      }
      var rootItem = items.length > 0 ? items[0] : null;

      function itemOf(node) {
        while (node && node !== frames) {
          if (node.fgItem) { return node.fgItem; }
          node = node.parentNode;
        }
        return null;
      }

      // Same rule as the Swift side: the name, "prefix.." when too long, nothing under 3 characters.
      function fit(name, width) {
        var room = (width - 3) / fg.charWidth;
        if (room < 3) { return ""; }
        var chars = Math.floor(room);
        var points = Array.from(name);
        if (points.length <= chars) { return name; }
        return points.slice(0, chars - 2).join("") + "..";
      }

      function place(item, x, width, cls) {
        item.g.setAttribute("class", cls);
        item.rect.setAttribute("x", x.toFixed(2));
        item.rect.setAttribute("width", width.toFixed(2));
        item.text.setAttribute("x", (x + 3).toFixed(2));
        item.text.textContent = fit(item.name, width);
      }

      // The clicked frame fills the width; its ancestors (the frames below whose range contains
      // it) stretch too and fade; its descendants scale with it; everything else hides.
      function zoom(target) {
        var start = target.s, end = target.s + target.n, scale = fg.width / target.n;
        for (var i = 0; i < items.length; i++) {
          var item = items[i];
          if (item.d < target.d) {
            if (item.s <= start && item.s + item.n >= end) {
              place(item, fg.xpad, fg.width, "f parent");
            } else {
              item.g.setAttribute("class", "f hide");
            }
          } else if (item.s >= start && item.s + item.n <= end) {
            place(item, fg.xpad + (item.s - start) * scale, item.n * scale, "f");
          } else {
            item.g.setAttribute("class", "f hide");
          }
        }
        unzoomButton.setAttribute("class", target === rootItem ? "hide" : "");
      }

      function unzoom() {
        if (rootItem) { zoom(rootItem); }
      }

      function clearSearch() {
        for (var i = 0; i < items.length; i++) {
          items[i].rect.setAttribute("fill", items[i].fill);
        }
        matchedText.textContent = " ";
        searchButton.textContent = "Search";
        searching = false;
      }

      // Highlights frames whose name matches, and shows the share of the total they cover:
      // tree ranges are nested or disjoint, so after sorting by start (widest first) a range
      // starting before the end of the last counted one lies inside it and is not counted again.
      function search() {
        if (searching) { clearSearch(); return; }
        var term = window.prompt("Search for a function (regular expression):", "");
        if (term === null || term === "") { return; }
        var pattern;
        try {
          pattern = new RegExp(term);
        } catch (error) {
          window.alert("Not a valid regular expression: " + error.message);
          return;
        }
        var ranges = [];
        for (var i = 0; i < items.length; i++) {
          var item = items[i];
          if (item !== rootItem && pattern.test(item.name)) {
            item.rect.setAttribute("fill", "rgb(230,0,230)");
            ranges.push(item);
          }
        }
        ranges.sort(function (a, b) { return a.s - b.s || b.n - a.n; });
        var matched = 0, lastEnd = -1;
        for (var j = 0; j < ranges.length; j++) {
          if (ranges[j].s >= lastEnd) {
            matched += ranges[j].n;
            lastEnd = ranges[j].s + ranges[j].n;
          }
        }
        matchedText.textContent = "Matched: " + (100 * matched / fg.total).toFixed(2) + "%";
        searchButton.textContent = "Clear search";
        searching = true;
      }

      frames.addEventListener("click", function (event) {
        var item = itemOf(event.target);
        if (item) { zoom(item); }
      });
      frames.addEventListener("mouseover", function (event) {
        var item = itemOf(event.target);
        if (item) { details.textContent = "Function: " + item.title; }
      });
      frames.addEventListener("mouseout", function () { details.textContent = " "; });
      unzoomButton.addEventListener("click", unzoom);
      searchButton.addEventListener("click", search);
      document.addEventListener("keydown", function (event) {
        if (event.key === "Escape") { unzoom(); if (searching) { clearSearch(); } }
      });
    })();

    """#
}
