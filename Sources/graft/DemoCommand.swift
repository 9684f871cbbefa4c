import ArgumentParser
import GraftKit
import Glibc

/// A self-contained tour: compiles a small C program, starts it, and patches it live with the same
/// commands a user types, printing each command before its output.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "A self-contained tour on a bundled victim: patch, refuse, list, unpatch, live.",
        discussion: "Needs a C compiler (cc). Example: graft demo")

    @Option(name: .customLong("interval"), help: "The victim's print interval in milliseconds.")
    var interval = 100

    static let victimSource = """
    #include <stdio.h>
    #include <stdlib.h>
    #include <unistd.h>
    volatile int scale = 1;
    __attribute__((noinline)) int value_a(void) { int s = 0; for (int i = 0; i < scale; i++) s += scale * 1; return s; }
    __attribute__((noinline)) int value_b(void) { int s = 0; for (int i = 0; i < scale; i++) s += scale * 2; return s; }
    __attribute__((noinline)) int price(int quantity) { int s = 0; for (int i = 0; i < quantity; i++) s += 10 * scale; return s; }
    int main(int argc, char **argv) {
        int interval = argc > 1 ? atoi(argv[1]) : 100;
        printf("ready\\n"); fflush(stdout);
        for (int i = 0; i < 600000 / interval; i++) {
            printf("value_a() = %d, price(3) = %d\\n", value_a(), price(3)); fflush(stdout);
            usleep(interval * 1000);
        }
        return 0;
    }
    """

    func run() throws {
        var template = Array("/tmp/graft-demo-XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            throw GraftError.systemCall(name: "mkdtemp", errno: errno, context: "/tmp")
        }
        defer { _ = try? runQuiet("/bin/rm", ["-rf", dir]) }
        let source = dir + "/victim.c", binary = dir + "/victim"
        guard let file = fopen(source, "w") else { throw GraftError.systemCall(name: "fopen", errno: errno, context: source) }
        fputs(Self.victimSource, file)
        fclose(file)
        say("graft demo: a C program that prints value_a() and price(3) in a loop is changed while it runs.\n")
        say("$ cc -O1 -g -o victim victim.c")
        guard (try? runQuiet("/usr/bin/env", ["cc", "-O1", "-g", "-o", binary, source])) == 0 else {
            throw GraftError.usage("the demo needs a C compiler: install gcc (`make demo` does) and try again")
        }
        let victim = try ChildProcess.spawn(binary, arguments: [String(interval)])
        defer { victim.kill() }
        guard victim.readLine(timeout: 10) == "ready" else { throw GraftError.usage("the demo victim did not start") }
        let pid = String(victim.pid)
        let state = ["--state-dir", dir + "/journal"]
        say("$ ./victim &   # pid \(pid)")
        show(victim, lines: 2)

        graft(["symbols", "-p", pid, "value_*"] + state, "List the functions graft can see:")
        graft(["patch", "-p", pid, "value_a", "--to", "value_b", "--dry-run"] + state, "See what a patch would write, without writing:")
        graft(["patch", "-p", pid, "value_a", "--to", "value_b"] + state, "Redirect value_a to value_b, live:")
        show(victim, lines: 3)
        graft(["patch", "-p", pid, "price", "--return", "0"] + state, "Make price() return 0 (a fault injected in a running program):")
        show(victim, lines: 3)
        graft(["patch", "-p", pid, "value_a", "--return", "7"] + state, "graft refuses to stack a second patch on value_a:")
        graft(["patch", "-p", pid, "price+1"] + state + ["--return", "1"], "…and refuses a location that is not an instruction boundary:")
        graft(["list", "-p", pid] + state, "The journal, checked against memory:")
        graft(["unpatch", "-p", pid, "--all"] + state, "Undo everything, exactly:")
        show(victim, lines: 3)
        graft(["list", "-p", pid] + state, "Nothing is left applied:")
        say("\nThe victim ran the whole time and was never restarted. Try it on your own process: graft patch -p PID FUNCTION --to OTHER")
    }

    private func say(_ text: String) { Output.line(text) }

    private func show(_ victim: ChildProcess, lines: Int) {
        victim.drain()
        for _ in 0..<lines {
            if let line = victim.readLine(timeout: 3) { say("  victim> \(line)") }
        }
    }

    private func graft(_ arguments: [String], _ title: String) {
        say("\n# \(title)")
        say("$ graft " + arguments.filter { !$0.contains("/journal") && $0 != "--state-dir" }.joined(separator: " "))
        _ = GraftCLI.run(arguments)
    }
}

/// Runs a helper program to completion with its output discarded; returns its exit status.
func runQuiet(_ path: String, _ arguments: [String]) throws -> Int32 {
    try ChildProcess.spawn(path, arguments: arguments, captureStdout: true).waitForExit()
}
