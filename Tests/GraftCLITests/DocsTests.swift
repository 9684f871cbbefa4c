import Glibc
import Testing
import TestSupport

/// The documentation cannot rot: the Swift program in docs/library.md is the built example and works
/// on a live process, and every command `graft --help` lists has an example in README.md.
@Suite struct DocsTests {
    @Test func libraryDocShowsTheExamplesByteForByte() throws {
        let doc = try docsFile("docs/library.md")
        let blocks = swiftBlocks(in: doc)
        let examples = ["Examples/LibraryExample/main.swift", "Examples/HookExample/main.swift"]
        #expect(blocks.count == examples.count, "docs/library.md should hold \(examples.count) ```swift blocks, found \(blocks.count)")
        for (block, path) in zip(blocks, examples) {
            #expect(withoutTrailingNewlines(block) == withoutTrailingNewlines(try docsFile(path)),
                    "a ```swift block in docs/library.md differs from \(path)")
        }
    }

    /// The path-dependency snippet of docs/library.md, as written (package named after the folder,
    /// `traits: []`), resolves in a fresh package and fetches none of the CLI's dependencies.
    @Test func libraryDependencySnippetResolvesWithoutTheCLIsDependencies() throws {
        let doc = try docsFile("docs/library.md")
        let lines = doc.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let dependency = try #require(lines.first { $0.hasPrefix("dependencies: [.package(path: \"../graft\"") })
        let target = try #require(lines.first { $0.hasPrefix("targets: [.executableTarget(name: \"mytool\"") })
        let dir = docsTemporaryDirectory()
        defer { _ = try? runCommand("/bin/rm", ["-rf", dir]) }
        // ../graft from the consumer: a symbolic link to this package, named as the snippet says.
        #expect(symlink(Victims.packageRoot, dir + "/graft") == 0)
        let consumer = dir + "/mytool"
        #expect(mkdir(consumer, 0o755) == 0 && mkdir(consumer + "/Sources", 0o755) == 0 && mkdir(consumer + "/Sources/mytool", 0o755) == 0)
        try writeDocsFile(consumer + "/Package.swift", """
            // swift-tools-version:6.1
            import PackageDescription
            let package = Package(name: "mytool",
                \(dependency)
                \(target)
            )
            """)
        try writeDocsFile(consumer + "/Sources/mytool/main.swift", "import GraftKit\nprint(hex(UInt64(1)))\n")
        let resolved = try runCommand("/usr/bin/env", ["swift", "package", "--package-path", consumer, "--scratch-path", consumer + "/.build",
                                                       "resolve"], timeout: 240)
        #expect(resolved.status == 0, "\(resolved.stdout)\(resolved.stderr)")
        let describe = try runCommand("/usr/bin/env", ["swift", "package", "--package-path", consumer, "--scratch-path", consumer + "/.build",
                                                       "show-dependencies", "--format", "flatlist"], timeout: 240)
        #expect(describe.status == 0, "\(describe.stderr)")
        #expect(!describe.stdout.contains("swift-argument-parser") && access(consumer + "/.build/checkouts/swift-argument-parser", F_OK) != 0,
                "a GraftKit user fetched the CLI's dependency: \(describe.stdout)")
    }

    /// The hook example hooks value_a with a return value of 5 for 6 calls: the victim prints a=5,
    /// then a=1 again once the session has removed its breakpoint.
    @Test func hookExampleHooksALiveProcessAndRestoresIt() throws {
        let example = String(try graftBinary().dropLast("graft".count)) + "graft-hook-example"
        #expect(access(example, X_OK) == 0, "\(example) is missing: run `swift build` first")
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        #expect(victim.waitForLine("a=1"))
        let result = try runCommand(example, [String(victim.pid)], timeout: 60)
        #expect(result.status == 0, "stdout: \(result.stdout)\nstderr: \(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.filter { $0.hasPrefix("call value_a tid \(victim.pid)") }.count == 6, "\(result.stdout)")
        #expect(lines.filter { $0 == "return value_a = 5 (the function computed 1)" }.count >= 5, "\(result.stdout)")
        #expect(lines.last == "ended by count, code restored: true", "\(result.stdout)")
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=5" }) != nil, "value_a never returned 5")
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil, "value_a did not come back after the session")
        #expect(victim.isAlive && victim.procStatus("TracerPid") == "0")
    }

    @Test func libraryExampleChangesALiveProcessAndRestoresIt() throws {
        // Next to the graft binary of this build configuration (debug or release).
        let example = String(try graftBinary().dropLast("graft".count)) + "graft-library-example"
        #expect(access(example, X_OK) == 0, "\(example) is missing: run `swift build` first")
        let victim = try Victim.launch("c_loop")
        defer { victim.kill() }
        #expect(victim.waitForLine("a=1"))
        let state = docsTemporaryDirectory()
        defer { _ = try? runCommand("/bin/rm", ["-rf", state]) }

        let result = try runCommand(example, [String(victim.pid)], timeout: 60, environment: ["GRAFT_STATE_DIR": state])
        #expect(result.status == 0, "stdout: \(result.stdout)\nstderr: \(result.stderr)")
        #expect(result.stdout.contains("patch 1: value_a jumps to value_b"), "\(result.stdout)")
        #expect(result.stdout.contains("refused: value_a is already patched (patch 1)"), "\(result.stdout)")
        #expect(result.stdout.contains("unpatch 2: reverted"), "\(result.stdout)")

        // The victim's output, in order: the jump (a=2), the stub (a=7), then the original (a=1) again.
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=2" }) != nil, "value_a never jumped to value_b")
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=7" }) != nil, "value_a never returned 7")
        #expect(victim.waitForLine(timeout: 5, where: { $0 == "a=1" }) != nil, "value_a did not come back after unpatch")
        #expect(victim.isAlive)
        // The journal the example wrote lives in GRAFT_STATE_DIR: one file for this process instance.
        let listing = try runCommand("/bin/ls", [state])
        #expect(listing.stdout.split(separator: "\n").contains { $0.hasPrefix("\(victim.pid)-") && $0.hasSuffix(".json") },
                "journal files: \(listing.stdout)")
    }

    @Test func everySubcommandHasAnExampleInTheReadme() throws {
        let graft = try graftBinary()
        let help = try runCommand(graft, ["--help"])
        #expect(help.status == 0)
        let commands = subcommands(inHelp: help.stdout)
        #expect(commands.contains("patch") && commands.contains("unpatch"), "could not read the subcommands from: \(help.stdout)")
        let readme = try docsFile("README.md")
        let lines = readme.split(separator: "\n").map { line -> Substring in
            var text = line.drop(while: { $0 == " " })
            if text.hasPrefix("$ ") { text = text.dropFirst(2) }
            return text
        }
        for command in commands {
            let prefix = "graft \(command)"
            let found = lines.contains { $0 == prefix || $0.hasPrefix(prefix + " ") }
            #expect(found, "README.md has no example line starting `\(prefix)`")
        }
    }
}

// MARK: - Helpers (prefixed: the test target shares one namespace)

private func docsFile(_ relativePath: String) throws -> String {
    let path = Victims.packageRoot + "/" + relativePath
    return try #require(readTextFile(path), "cannot read \(path)")
}

/// The bodies of the ```swift fenced blocks of a Markdown text.
private func swiftBlocks(in markdown: String) -> [String] {
    var blocks: [String] = []
    var current: [Substring]?
    for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
        if current == nil {
            if line == "```swift" { current = [] }
        } else if line == "```" {
            blocks.append(current!.joined(separator: "\n"))
            current = nil
        } else {
            current!.append(line)
        }
    }
    return blocks
}

private func withoutTrailingNewlines(_ text: String) -> Substring {
    var result = text[...]
    while result.hasSuffix("\n") { result = result.dropLast() }
    return result
}

/// The names in the SUBCOMMANDS section of swift-argument-parser's help: lines indented by exactly two
/// spaces (continuation lines are indented further).
private func subcommands(inHelp help: String) -> [String] {
    var inSection = false
    var names: [String] = []
    for line in help.split(separator: "\n") {
        if line.hasPrefix("SUBCOMMANDS:") { inSection = true; continue }
        guard inSection else { continue }
        if !line.hasPrefix(" ") { break }
        guard line.hasPrefix("  "), !line.hasPrefix("   ") else { continue }
        let name = line.dropFirst(2).prefix(while: { $0 != " " })
        if name == "See" { break }
        if !name.isEmpty { names.append(String(name)) }
    }
    return names
}

private func writeDocsFile(_ path: String, _ text: String) throws {
    let file = try #require(fopen(path, "w"), "cannot write \(path)")
    fputs(text, file)
    fclose(file)
}

private func docsTemporaryDirectory() -> String {
    var template = Array("/tmp/graft-docs-test-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}
