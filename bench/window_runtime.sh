#!/usr/bin/env bash
# What graft's own process does inside a stop window, besides ptrace: Swift runtime metadata look-ups
# (swift_getTypeByMangledName*, swift_getGenericMetadata: 5-30 µs each the first time a type is used
# in a process), allocations (swift_allocObject, malloc) and page faults, each with its stack.
#
#   bench/window_runtime.sh [patch|unpatch|both] [THREADS]     (default: both, 1 thread; root, bpftrace)
#
# The window is the tracer thread's first PTRACE_SEIZE to its last PTRACE_DETACH (syscall
# tracepoints, so no marks in graft's code). Stacks are symbolized afterwards from the load
# addresses seen by the probes (graft has exited by then). Exits 1 when a metadata look-up falls
# inside a window: Tracee.warmUp should have made that type's metadata before the first stop.
# KEEP_TRACE=path keeps the raw bpftrace output (path.patch, path.unpatch).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OPS=${1:-both}
THREADS=${2:-1}
GRAFT=${GRAFT:-$ROOT/.build/release/graft}
OUT="$ROOT/.build/bench"
LIBSWIFT=$(ldd "$GRAFT" | awk '/libswiftCore.so/ { print $3 }')
# The release binary (`make release`) holds the Swift runtime itself (--static-swift-stdlib).
[[ -n "$LIBSWIFT" ]] || LIBSWIFT=$GRAFT
LIBC=$(ldd "$GRAFT" | awk '/libc.so.6/ { print $3 }')
BENCH_NAME=window_runtime
source "$ROOT/bench/lib.sh"

[[ -x "$GRAFT" ]] || die "no graft binary at $GRAFT: run \`make release\`"
has bpftrace || die "needs bpftrace (apt-get install bpftrace)"
[[ $(id -u) == 0 ]] || die "needs root (uprobes)"
[[ -n "$LIBSWIFT" && -n "$LIBC" ]] || die "cannot find libswiftCore/libc of $GRAFT"
mkdir -p "$OUT"
cc -O2 -Wall -fcf-protection=none -pthread -o "$OUT/victim_gap" "$ROOT/bench/victim_gap.c"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/graft-window.XXXXXX")
VICTIM_PID=""
trap cleanup EXIT
"$OUT/victim_gap" "$THREADS" 600 > "$WORK/victim.out" &
VICTIM_PID=$!
sleep 0.3

# One graft command under bpftrace; events of the thread that seizes, from its first SEIZE (0x4206)
# to its last DETACH (17), go to the report.
probe_one() { # op
    local op=$1 cmd
    if [[ $op == patch ]]; then cmd="$GRAFT patch -p $VICTIM_PID bench_target --to bench_other --json"
    else cmd="$GRAFT unpatch -p $VICTIM_PID --all --json"; fi
    bpftrace -q -e "
        tracepoint:syscalls:sys_enter_ptrace /pid == cpid/ {
            if (args->request == 0x4206 && @tracer == 0) { @tracer = tid; printf(\"BEGIN %d\n\", tid); }
            if (tid == @tracer) { printf(\"PTRACE %d\n\", args->request); } }
        tracepoint:syscalls:sys_exit_ptrace /pid == cpid && tid == @tracer/ { printf(\"PTRACE_EXIT\n\"); }
        uprobe:$GRAFT:graft_monotonic_ns /pid == cpid/ { printf(\"BASE graft %lx\n\", reg(\"ip\")); }
        uprobe:$LIBSWIFT:swift_allocObject /pid == cpid && @base == 0/ { @base = 1; printf(\"BASE swift %lx\n\", reg(\"ip\")); }
        uprobe:$LIBSWIFT:swift_getTypeByMangledName*, uprobe:$LIBSWIFT:swift_getGenericMetadata,
        uprobe:$LIBSWIFT:swift_allocObject, uprobe:$LIBC:malloc
            /pid == cpid && tid == @tracer/ { printf(\"EVENT %s%s\n\", probe, ustack(16)); }
        software:page-faults:1 /pid == cpid && tid == @tracer/ { printf(\"EVENT page-fault%s\n\", ustack(16)); }
    " -c "$cmd" > "$WORK/$op.trace" 2>&1 || true; [[ -z "${KEEP_TRACE:-}" ]] || cp "$WORK/$op.trace" "$KEEP_TRACE.$op"
    python3 - "$WORK/$op.trace" "$GRAFT" "$LIBSWIFT" "$op" <<'PY'
import re, subprocess, sys
trace, graft, libswift, op = sys.argv[1:]
def symoff(path, name):
    out = subprocess.run(['nm', '-D', path] if path.endswith('.so') else ['nm', path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name: return int(parts[0], 16)
    return None
text = open(trace).read()
bases = {}
m = re.search(r'BASE graft ([0-9a-f]+)', text)
if m: bases[graft] = int(m.group(1), 16) - symoff(graft, 'graft_monotonic_ns')
m = re.search(r'BASE swift ([0-9a-f]+)', text)
if m: bases[libswift] = int(m.group(1), 16) - symoff(libswift, 'swift_allocObject')
def name(addr):
    for path, base in bases.items():
        if base <= addr < base + 0x4000000:
            out = subprocess.run(['addr2line', '-f', '-e', path, hex(addr - base - 1)], capture_output=True, text=True).stdout
            return out.split('\n')[0][:100]
    return hex(addr)
# The window: from the BEGIN line to the last DETACH's exit.
lines = text.split('\n')
start = next((i for i, l in enumerate(lines) if l.startswith('BEGIN')), None)
if start is None: print(f'{op}: no window seen'); sys.exit(0)
last_detach = max((i for i, l in enumerate(lines) if l == 'PTRACE 17'), default=len(lines))
end = next((i for i in range(last_detach, len(lines)) if lines[i] == 'PTRACE_EXIT'), len(lines))
events, current = [], None
for l in lines[start:end]:
    if l.startswith('EVENT '):
        current = [l[6:].split(':')[-1].strip()]; events.append(current)
    elif current is not None and re.match(r'\s+\S', l):
        a = l.strip().split('+')[0]
        current.append(name(int(a, 16)) if re.fullmatch(r'0x[0-9a-f]+|[0-9a-f]{8,}', a) else a)
    else:
        current = None
meta = [e for e in events if 'Metadata' in e[0] or 'MangledName' in e[0]]
print(f'{op}: {len(events)} runtime events in the window: {len(meta)} metadata look-ups, '
      f'{sum(e[0] == "swift_allocObject" for e in events)} swift_allocObject, {sum(e[0] == "malloc" for e in events)} malloc, '
      f'{sum(e[0] == "page-fault" for e in events)} page faults')
for e in events:
    caller = next((f for f in e[1:] if f.startswith('$s') and 'Graft' in f), e[1] if len(e) > 1 else '?')
    print(f'  {e[0]:<36} {caller}')
sys.exit(2 if meta else 0)
PY
}

status=0
case $OPS in
    patch) probe_one patch || status=1 ;;
    unpatch) "$GRAFT" patch -p "$VICTIM_PID" bench_target --to bench_other --json > /dev/null; probe_one unpatch || status=1 ;;
    both) probe_one patch || status=1; probe_one unpatch || status=1 ;;
    *) die "usage: bench/window_runtime.sh [patch|unpatch|both] [THREADS]" ;;
esac
exit $status
