# trace_reference.py: a reference instruction count for trace_calls, by gdb `stepi`, to check the
# numbers in trace_calls.S / README.md and graft trace's output against.
#
#   printf 'go\nrec\n' | gdb -nx -batch -x TestTargets/trace_reference.py --args .build/victims/trace_calls
#
# (the victim reads its `go` / `rec` / `rec N` lines from gdb's stdin; any mode argument goes after the
# binary, e.g. `--args .build/victims/trace_calls busy`). gdb runs the victim with a breakpoint on the
# first instruction of each root function (TRACE_REFERENCE_ROOTS, default "trace_a trace_fact"); at
# every hit it disables the breakpoints and `stepi`s until that call returns (pc = the return address
# and sp = entry sp + 8), bucketing every executed instruction's pc by the function it lies in
# (`info symbol`): `self` = instructions executed inside that function, `calls` = entries at its first
# byte, `total` = every instruction from the root's first one to its `ret` inclusive (a `call`
# counts in the caller, a `ret` in the callee; the `syscall` instruction is one step). Then it
# re-enables the breakpoints and continues, until the victim exits. Per traced call it prints
#
#   reference trace_a call 1: total 113
#     trace_a      calls 1  self 53
#     …
#   {"event":"reference","root":"trace_a","call":1,"arg":1,"total":113,"functions":{"trace_a":{"calls":1,"self":53},…},"check":"ok"}
#
# `check` compares with the counts trace_calls.S documents (trace_a: 113 = 53 + 33 + 18 + 9;
# trace_fact(n): n + 1 calls, 15n + 12 instructions): "ok" or "MISMATCH expected …"; the process exits 1
# at the end if any call mismatched. TRACE_REFERENCE_VERBOSE=1 also prints every step
# (`step <i> <pc> <function>+<offset> <disassembly>`). The victim's own lines (ready, traced 1 83, …)
# are interleaved on the same stdout.
import json
import os
import re

import gdb

ROOTS = os.environ.get("TRACE_REFERENCE_ROOTS", "trace_a trace_fact").split()
VERBOSE = os.environ.get("TRACE_REFERENCE_VERBOSE", "") not in ("", "0")
MAX_STEPS = 10_000_000


def expected(root, arg):
    if root == "trace_a":
        return {"total": 113, "functions": {
            "trace_a": {"calls": 1, "self": 53}, "trace_b": {"calls": 3, "self": 33},
            "trace_leaf": {"calls": 3, "self": 18}, "trace_sys": {"calls": 1, "self": 9}}}
    if root == "trace_fact":
        n = max(arg, 0)
        self_count = 15 * n + 12 if arg > 0 else 12
        return {"total": self_count, "functions": {"trace_fact": {"calls": n + 1, "self": self_count}}}
    return None


for cmd in ("set pagination off", "set confirm off", "set width 0", "set debuginfod enabled off",
            "set startup-with-shell off", "set scheduler-locking step", "set suppress-cli-notifications on",
            "set print thread-events off", "set print inferior-events off",
            "handle SIGUSR1 nostop noprint pass"):
    try:
        gdb.execute(cmd, to_string=True)
    except gdb.error:
        pass

_symbols = {}


def where(pc):
    """(function, offset) of pc, from the ELF symbols (works for .S functions without DWARF scopes)."""
    hit = _symbols.get(pc)
    if hit is None:
        text = gdb.execute("info symbol 0x%x" % pc, to_string=True).strip()
        m = re.match(r"^(\S+)(?: \+ (\d+))? in section", text)
        hit = (m.group(1), int(m.group(2) or 0)) if m else ("??", 0)
        _symbols[pc] = hit
    return hit


def reg(name):
    return int(gdb.parse_and_eval("(unsigned long)$" + name))


exited = False


def resume():
    """continue; False once the victim is gone (a multithreaded exit can fail `continue` with
    "Couldn't get registers: No such process" before gdb reports the exit)."""
    try:
        gdb.execute("continue")
    except gdb.error as e:
        if exited or "No such process" in str(e) or "not being run" in str(e):
            return False
        raise
    return not exited


def on_exit(event):
    global exited
    exited = True


gdb.events.exited.connect(on_exit)

breakpoints = {}
for root in ROOTS:
    bp = gdb.Breakpoint("*" + root)
    bp.silent = True
    breakpoints[root] = bp
starts = {}

calls_seen = {}
mismatches = 0

gdb.execute("run", to_string=False)
while not exited:
    try:
        pc = reg("pc")
    except gdb.error:
        break
    root, offset = where(pc)
    if root not in breakpoints or offset != 0:
        if not resume():
            break
        continue
    calls_seen[root] = calls_seen.get(root, 0) + 1
    arg = reg("rdi")
    for bp in breakpoints.values():
        bp.enabled = False
    entry_sp = reg("sp")
    ret = int.from_bytes(bytes(gdb.selected_inferior().read_memory(entry_sp, 8)), "little")
    functions = {}
    order = []
    total = 0
    arch = gdb.selected_frame().architecture()
    while total < MAX_STEPS:
        pc = reg("pc")
        if pc == ret and reg("sp") == entry_sp + 8:
            break
        fn, off = where(pc)
        if fn not in functions:
            functions[fn] = {"calls": 0, "self": 0}
            order.append(fn)
        functions[fn]["self"] += 1
        if off == 0:
            functions[fn]["calls"] += 1
        total += 1
        if VERBOSE:
            print("step %d 0x%x %s+%d %s" % (total, pc, fn, off, arch.disassemble(pc)[0]["asm"]))
        gdb.execute("stepi", to_string=True)
        if exited:
            break
    exp = expected(root, arg)
    got = {"total": total, "functions": {fn: functions[fn] for fn in order}}
    if exp is None:
        check = "no expectation"
    elif got["total"] == exp["total"] and got["functions"] == exp["functions"]:
        check = "ok"
    else:
        check = "MISMATCH expected " + json.dumps(exp, separators=(",", ":"))
        mismatches += 1
    print("reference %s call %d (arg %d): total %d" % (root, calls_seen[root], arg, total))
    for fn in order:
        print("  %-12s calls %d  self %d" % (fn, functions[fn]["calls"], functions[fn]["self"]))
    print(json.dumps({"event": "reference", "root": root, "call": calls_seen[root], "arg": arg,
                      "total": total, "functions": got["functions"], "check": check},
                     separators=(",", ":")))
    for bp in breakpoints.values():
        bp.enabled = True
    if exited or not resume():
        break

print("reference done: %d call(s), %d mismatch(es)" % (sum(calls_seen.values()), mismatches))
if mismatches:
    gdb.execute("quit 1")
