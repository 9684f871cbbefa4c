#!/usr/bin/env python3
"""inject_frida: frida's way of making a running process call a library's replacement, for
bench/inject.sh.

    inject_frida.py PID LIB FUNC TO [--hold SECONDS]

Attaches to PID (frida injects its agent: a thread of its own in the target), and in one script:
`Module.load(LIB)` (the target's dlopen), `graft_original_<TO>` = the original (see below),
`Interceptor.replace(FUNC, LIB!TO)` -- then the replacement is live -- and `send('done')`. The
script is then eternalized (frida leaves the replacement in place when it detaches, as graft and
gdb do) and the session detached.

FUNC is looked up by name in the main executable's symbols (frida reads .symtab), TO and
graft_original_<TO> in LIB's exports. The replacement reaches the original the way frida documents
for Interceptor.replace: graft_original_<TO> = FUNC itself, written before the replace; a call of
FUNC from inside its replacement on the same thread goes to the original (frida's interceptor keeps
a per-thread invocation stack and lets it through). (Interceptor.replaceFast returns a pointer to
the original, but only once its jump is live, and frida 17's JavaScript API has no transaction to
write graft_original_<TO> before that: a thread calling FUNC in between would call NULL.)
--hold SECONDS keeps the session attached that long after `done` (for the per-call readings of
bench/inject.sh; the script is eternalized either way).

Prints one JSON line: {"tool":"frida","import_ms":..,"attach_ms":..,"script_ms":..,
"attach_to_done_ms":..,"detach_ms":..,"in_python_ms":..,"frida":"<version>"} -- import_ms is
`import frida` alone; attach_to_done_ms runs from just before frida.attach() to the moment the
script's `done` message (sent right after the replace) reached python; in_python_ms from the
start of the script (before the import) to the end of the detach.
"""
import sys
import time

T0 = time.monotonic()
import frida  # noqa: E402  (timed: frida's import is a large part of its start-up)

T_IMPORTED = time.monotonic()
import json  # noqa: E402
import threading  # noqa: E402

SCRIPT = r"""
const lib = Module.load(%(lib)s);
const func = Process.mainModule.getSymbolByName(%(func)s);
const to = lib.getExportByName(%(to)s);
const original = lib.getExportByName('graft_original_' + %(to)s);
original.writePointer(func);
Interceptor.replace(func, to);
Interceptor.flush();
send({ done: true, func: func.toString(), to: to.toString() });
"""


def main() -> int:
    args = sys.argv[1:]
    hold = 0.0
    if "--hold" in args:
        i = args.index("--hold")
        hold = float(args[i + 1])
        del args[i : i + 2]
    if len(args) != 4:
        print("usage: inject_frida.py PID LIB FUNC TO [--hold SECONDS]", file=sys.stderr)
        return 2
    pid, lib, func, to = int(args[0]), args[1], args[2], args[3]
    done = threading.Event()
    failure = []

    def on_message(message, _data):
        if message.get("type") == "send" and message.get("payload", {}).get("done"):
            done.set()
        elif message.get("type") == "error":
            failure.append(message.get("description", str(message)))
            done.set()

    t_attach = time.monotonic()
    session = frida.attach(pid)
    t_attached = time.monotonic()
    script = session.create_script(
        SCRIPT % {"lib": json.dumps(lib), "func": json.dumps(func), "to": json.dumps(to)}
    )
    script.on("message", on_message)
    script.load()
    if not done.wait(30):
        failure.append("no `done` from the script within 30 s")
    t_done = time.monotonic()
    if failure:
        print("inject_frida: " + failure[0].splitlines()[0], file=sys.stderr)
        session.detach()
        return 1
    if hold > 0:
        print("done", flush=True)
        time.sleep(hold)
    script.eternalize()
    session.detach()
    t_end = time.monotonic()
    ms = lambda a, b: round((b - a) * 1e3, 3)  # noqa: E731
    print(json.dumps({
        "tool": "frida", "import_ms": ms(T0, T_IMPORTED), "attach_ms": ms(t_attach, t_attached),
        "script_ms": ms(t_attached, t_done), "attach_to_done_ms": ms(t_attach, t_done),
        "detach_ms": ms(t_done, t_end) if hold == 0 else None, "in_python_ms": ms(T0, t_end), "frida": frida.__version__,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
