#!/usr/bin/env python3
"""hook_frida: frida's Interceptor.attach on bench_f, for bench/hooks.sh.

    hook_frida.py PID ADDR SECONDS

Attaches to PID (frida injects its agent into the target), hooks ADDR with
`Interceptor.attach(ptr(ADDR), { onEnter() { n++; } })` -- a JavaScript callback per call, the way
frida is normally used -- prints `armed` once the hook is in place, waits SECONDS, reads the count,
unhooks and detaches. Prints one JSON line at the end: {"tool":"frida","hits":N,"frida":"<version>"}.

frida rewrites the function's first bytes with a jump to its trampoline: no ptrace stop per hit; each
call runs the trampoline and the JS callback inside the target, under frida's JS lock (threads queue
for it). ADDR is given as an address because bench_f is in .symtab only, not exported.
"""
import json
import sys
import time

import frida


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: hook_frida.py PID ADDR SECONDS", file=sys.stderr)
        return 2
    pid, addr, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    session = frida.attach(pid)
    script = session.create_script(
        """
        let n = 0;
        const listener = Interceptor.attach(ptr('%s'), { onEnter() { n++; } });
        rpc.exports = {
            hits() { return n; },
            stop() { listener.detach(); Interceptor.flush(); return n; },
        };
        """
        % addr
    )
    script.load()
    print("armed", flush=True)
    try:
        time.sleep(seconds)
    finally:
        hits = script.exports_sync.stop()
        script.unload()
        session.detach()
    print(json.dumps({"tool": "frida", "hits": hits, "frida": frida.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
