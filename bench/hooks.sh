#!/usr/bin/env bash
# graft benchmarks, persistent hooks (issue 3): `bench/hooks.sh`. Self-contained: installs what it
# needs (gdb, bpftrace, binutils via apt-get; frida via pip), builds its C programs with cc into a
# temporary directory, runs everything, prints a Markdown report and writes it to
# bench/results/hooks-<date>.md. About 5 minutes with the defaults.
#
# Hits per second and µs per hit on bench/hook_victim.c (T threads calling bench_f() in a loop), for:
#   none      the victim unhooked: its own calls per second
#   rearm     bench/hook_rearm.c: int3; per hit restore the byte, rewind, single-step, re-insert, continue
#   onestop   bench/hook_onestop.c: int3; per hit emulate the displaced `push %rbp` (ONE stop), continue
#   hwstop    bench/hook_hwstop.c: DR0 on every thread; per hit just continue (ONE stop, no byte
#             changed): the baseline of the --hardware rows
#   gdb       gdb -batch -p PID: `break *bench_f`, `commands` `silent` `continue` `end`, `continue`,
#             interrupted (SIGINT) after D seconds; hits from `info breakpoints`
#   bpftrace  uprobe:VICTIM:bench_f { @n = count(); }, exits after D seconds
#   frida     bench/hook_frida.py: Interceptor.attach with a JS onEnter that counts
#   graft     shorthand for the three output modes below (issue 11 §3: what users see costs more per
#             hit than a count). No graft binary, or `graft hook --help` fails: the rows say "graft
#             hook: not available yet" and the rest runs.
#   graft-text   $GRAFT hook -p PID bench_f --duration D: the default, one text line per hit (to a
#             file); armed at its "hooked bench_f at ..." line, hits from its "N calls in ..." line
#   graft-json   ... --json: one JSON line per hit; armed at {"event":"armed",...}, hits from the last
#             {"event":"summary","hooks":[{"hits":N,...}]} line
#   graft-hw-text, graft-hw-quiet   the same as graft-text / graft-quiet with --hardware: the hook in
#             a debug register (DR0) instead of an int3 (issue 13: a hardware hook's cost beside an int3's)
#   graft-quiet  ... --json --quiet: no line per hit, the summary only (a count, like gdb silent,
#             bpftrace count() and the C tools)
# Each tool runs D seconds (its own timer, or the harness's from its "armed" line), R times, median
# reported; the victim's own call rate is sampled while the tool is armed. With 1 and 4
# victim threads; pinned (victim AND tool on the same single CPU, taskset -c $BENCH_CPU) and unpinned,
# each also "+poller": with a background shell loop that greps the tool's output file for its last line
# and sleeps 0.1 s (issue 11 §4; started for the mode's runs and always killed, see bench/lib.sh
# start_poller).
# Every row is also given as a ratio to the one-stop C program pinned (same thread count) and to the
# one-stop C program in the same mode.
#
# Environment:
#   BENCH_SECONDS=3      D, seconds each tool stays armed (the victim's unhooked rate is sampled 1 s)
#   BENCH_RUNS=3         R, runs per tool, thread count and mode; medians reported
#   BENCH_THREADS="1 4"  victim thread counts
#   BENCH_MODES="pinned unpinned pinned+poller unpinned+poller"
#   BENCH_CPU=1          the CPU for pinned mode
#   BENCH_TOOLS="none rearm onestop hwstop gdb bpftrace frida graft"  (graft = graft-quiet graft-text graft-json
#                        graft-hw-quiet graft-hw-text)
#   BENCH_WORK=32        multiply-adds between calls in the victim (see hook_victim.c: keeps frida from
#                        crashing it); 0 = the tightest loop
#   GRAFT=path           graft binary (default .build/release/graft); GRAFT_HOOK_ARGS: options added
#                        after `bench_f --duration D` in every graft mode (e.g. "--args 2"; bench_f has
#                        no DWARF, so these are raw registers: typed arguments are bench/typed_args.sh's)
#   BENCH_NO_INSTALL=1   install nothing; skip what is missing
#   BENCH_OUT=path       report file (default bench/results/hooks-<UTC date>.md)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=hooks
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
D=${BENCH_SECONDS:-3}
R=${BENCH_RUNS:-3}
THREADS=${BENCH_THREADS:-"1 4"}
MODES=${BENCH_MODES:-"pinned unpinned pinned+poller unpinned+poller"}
CPU=${BENCH_CPU:-1}
TOOLS=${BENCH_TOOLS:-"none rearm onestop hwstop gdb bpftrace frida graft"}
TOOLS=" $TOOLS "
TOOLS=${TOOLS// graft / graft-quiet graft-text graft-json graft-hw-quiet graft-hw-text }
TOOLS=$(xargs <<< "$TOOLS")
GRAFT_MODES="graft-quiet graft-text graft-json graft-hw-quiet graft-hw-text"
is_graft() { [[ $1 == graft-* ]]; }
want_graft() { want graft-quiet || want graft-text || want graft-json || want graft-hw-quiet || want graft-hw-text; }
for tool in $TOOLS; do
    case $tool in none|rearm|onestop|hwstop|gdb|bpftrace|frida|graft-quiet|graft-text|graft-json|graft-hw-quiet|graft-hw-text) ;;
        *) die "unknown tool in BENCH_TOOLS: $tool (none rearm onestop hwstop gdb bpftrace frida graft graft-quiet graft-text graft-json graft-hw-quiet graft-hw-text)" ;; esac
done
for mode in $MODES; do
    case $mode in pinned|unpinned|pinned+poller|unpinned+poller) ;;
        *) die "unknown mode in BENCH_MODES: $mode (pinned unpinned pinned+poller unpinned+poller)" ;; esac
done
WORK_ITERS=${BENCH_WORK:-32}
GRAFT=${GRAFT:-$ROOT/.build/release/graft}
CC=${CC:-cc}
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${BENCH_OUT:-$ROOT/bench/results/hooks-$STAMP.md}
BASE_SECONDS=1
START_S=$SECONDS


# --- what is needed ------------------------------------------------------------------------------------
declare -A SKIP=() # tool -> why it is not measured

APT_UPDATED=""
apt_install() { # PACKAGE...: install with apt-get (root), once updated
    [[ -z "${BENCH_NO_INSTALL:-}" ]] || return 1
    [[ $(id -u) == 0 ]] && has apt-get || return 1
    if [[ -z "$APT_UPDATED" ]]; then
        log "apt-get update"
        apt-get update -qq >/dev/null 2>&1 || true
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

has "$CC" || apt_install gcc libc6-dev || die "no C compiler ($CC)"
has objdump || apt_install binutils || die "no objdump (apt-get install binutils)"
has taskset || apt_install util-linux || true
if [[ " $MODES " == *" pinned"* ]] && ! has taskset; then
    log "no taskset: skipping pinned modes"
    MODES=$(tr ' ' '\n' <<< "$MODES" | grep -v '^pinned' | tr '\n' ' ')
fi
[[ $CPU -lt $(nproc) ]] || die "BENCH_CPU=$CPU, but this machine has $(nproc) CPUs"
if want gdb && ! has gdb && ! apt_install gdb; then SKIP[gdb]="gdb not installed (apt-get install gdb failed or BENCH_NO_INSTALL)"; fi
if want bpftrace; then
    if ! has bpftrace && ! apt_install bpftrace; then
        SKIP[bpftrace]="bpftrace not installed (apt-get install bpftrace failed or BENCH_NO_INSTALL)"
    elif [[ $(id -u) != 0 ]]; then
        SKIP[bpftrace]="bpftrace needs root"
    elif [[ ! -e /sys/kernel/tracing/uprobe_events ]]; then
        # bpftrace attaches uprobes through perf_event_open, but detaches them through tracefs: without it
        # it prints "failed to detach probe". Mounting tracefs changes nothing else.
        mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null && log "mounted tracefs on /sys/kernel/tracing (for bpftrace)" || true
    fi
fi
if want frida && ! python3 -c 'import frida' 2>/dev/null; then
    if [[ -z "${BENCH_NO_INSTALL:-}" ]] && has python3; then
        log "pip install frida"
        python3 -m pip install -q frida >/dev/null 2>&1 || true
    fi
    python3 -c 'import frida' 2>/dev/null || SKIP[frida]="frida not installed (python3 -m pip install frida failed, or BENCH_NO_INSTALL)"
fi
GRAFT_CMD=()
if want_graft; then
    if [[ -x "$GRAFT" ]] && "$GRAFT" hook --help > /dev/null 2>&1; then
        GRAFT_CMD=(--duration "$D")
        if [[ -n "${GRAFT_HOOK_ARGS:-}" ]]; then
            read -r -a extra <<< "$GRAFT_HOOK_ARGS"
            GRAFT_CMD+=("${extra[@]}")
        fi
    else
        for tool in $GRAFT_MODES; do SKIP[$tool]="graft hook: not available yet"; done
    fi
fi

# --- build -----------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/graft-hooks.XXXXXX")
VICTIM_PID=""
TOOL_PID=""
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

VICTIM=$WORK/hook_victim
"$CC" -O2 -Wall -pthread -o "$VICTIM" "$ROOT/bench/hook_victim.c"
"$CC" -O2 -Wall -o "$WORK/hook_onestop" "$ROOT/bench/hook_onestop.c"
"$CC" -O2 -Wall -o "$WORK/hook_rearm" "$ROOT/bench/hook_rearm.c"
"$CC" -O2 -Wall -o "$WORK/hook_hwstop" "$ROOT/bench/hook_hwstop.c"
FIRST=$(objdump -d --disassemble=bench_f "$VICTIM" | awk '/<bench_f>:/ { getline; print; exit }')
[[ "$FIRST" == *"push "*"%rbp"* ]] || die "bench_f must start with push %rbp, objdump says: $FIRST"
COUNT=$WORK/counts

# --- the victim ------------------------------------------------------------------------------------------
VPIN=()
start_victim() { # threads
    # A session of its own: gdb interrupts its inferior by a SIGINT to the inferior's process group.
    # No core file if a tool crashes it (the subshell execs: $! is the victim's pid).
    (ulimit -c 0; exec setsid "${VPIN[@]}" "$VICTIM" "$1" "$COUNT" 900 "$WORK_ITERS") > "$WORK/victim.out" 2>&1 &
    local launcher=$!
    for _ in $(seq 500); do grep -q '^ready' "$WORK/victim.out" 2>/dev/null && break; sleep 0.01; done
    local line
    line=$(grep '^ready' "$WORK/victim.out") || die "the victim did not start: $(cat "$WORK/victim.out")"
    VICTIM_PID=$(sed 's/.*pid=\([0-9]*\).*/\1/' <<< "$line")
    [[ "$VICTIM_PID" == "$launcher" ]] || log "note: victim pid $VICTIM_PID, launched as $launcher"
    ADDR=$(sed 's/.*bench_f=\(0x[0-9a-f]*\).*/\1/' <<< "$line")
}
counter() { "$VICTIM" read "$COUNT"; } # -> "calls ns"
victim_calling() { # alive, and its count moves
    kill -0 "$VICTIM_PID" 2>/dev/null || return 1
    local a b
    a=$(counter); sleep 0.05; b=$(counter)
    [[ ${a% *} != "${b% *}" ]]
}

# --- one measurement -------------------------------------------------------------------------------------
DATA=$WORK/data # mode threads tool run status hits victim_rate missed calls
: > "$DATA"
TPIN=()

# tool_command TOOL -> sets CMD (array), PATTERN (the line that says "armed")
tool_command() {
    case $1 in
        rearm|onestop|hwstop) CMD=("$WORK/hook_$1" "$VICTIM_PID" "$ADDR" "$D" "$COUNT"); PATTERN='^armed' ;;
        gdb)
            cat > "$WORK/gdb.cmds" <<'EOF'
set pagination off
set confirm off
set width 0
break *bench_f
commands
silent
continue
end
echo armed\n
continue
info breakpoints
detach
quit
EOF
            CMD=(gdb -nx -q -batch -iex 'set debuginfod enabled off' -p "$VICTIM_PID" -x "$WORK/gdb.cmds"); PATTERN='^armed' ;;
        bpftrace)
            local ms
            ms=$(awk -v d="$D" 'BEGIN { printf "%d", d * 1000 }')
            CMD=(bpftrace -B line -e "BEGIN { printf(\"armed\\n\"); } uprobe:$VICTIM:bench_f { @n = count(); } interval:ms:$ms { exit(); }")
            PATTERN='^armed' ;;
        frida) CMD=(python3 "$ROOT/bench/hook_frida.py" "$VICTIM_PID" "$ADDR" "$D"); PATTERN='^armed' ;;
        graft-text) CMD=("$GRAFT" hook -p "$VICTIM_PID" bench_f "${GRAFT_CMD[@]}"); PATTERN='^hooked ' ;;
        graft-json) CMD=("$GRAFT" hook -p "$VICTIM_PID" bench_f "${GRAFT_CMD[@]}" --json); PATTERN='"event":"armed"' ;;
        graft-quiet) CMD=("$GRAFT" hook -p "$VICTIM_PID" bench_f "${GRAFT_CMD[@]}" --json --quiet); PATTERN='"event":"armed"' ;;
        graft-hw-text) CMD=("$GRAFT" hook -p "$VICTIM_PID" bench_f "${GRAFT_CMD[@]}" --hardware); PATTERN='^hooked ' ;;
        graft-hw-quiet) CMD=("$GRAFT" hook -p "$VICTIM_PID" bench_f "${GRAFT_CMD[@]}" --hardware --json --quiet); PATTERN='"event":"armed"' ;;
    esac
}

# parse_hits TOOL FILE -> prints "hits missed calls" (missed, calls "-" unless the tool counts them)
parse_hits() {
    local f=$2 h m c
    case $1 in
        rearm|onestop|hwstop)
            h=$(grep -o '"hits":[0-9]*' "$f" | tail -1 | cut -d: -f2)
            m=$(grep -o '"missed":-\?[0-9]*' "$f" | tail -1 | cut -d: -f2)
            c=$(grep -o '"calls":[0-9]*' "$f" | tail -1 | cut -d: -f2) ;;
        gdb)
            grep -q '^Num  *Type' "$f" || return 1 # `info breakpoints` did not run
            h=$(grep -o 'already hit [0-9]* time' "$f" | tail -1 | awk '{ print $3 }'); h=${h:-0} ;;
        bpftrace)
            grep -q '^armed' "$f" || return 1
            h=$(grep -o '^@n: [0-9]*' "$f" | tail -1 | awk '{ print $2 }'); h=${h:-0} ;;
        frida) h=$(grep -o '"hits": *[0-9]*' "$f" | tail -1 | grep -o '[0-9]*$') ;;
        graft-json|graft-quiet|graft-hw-quiet) h=$(grep '"event":"summary"' "$f" | tail -1 | grep -o '"hits":[0-9]*' | head -1 | cut -d: -f2) ;;
        graft-text|graft-hw-text) h=$(grep -E '^[0-9]+ calls? in [0-9.]+ s; ended by' "$f" | tail -1 | cut -d' ' -f1) ;;
    esac
    [[ -n "${h:-}" ]] || return 1
    echo "$h ${m:--} ${c:--}"
}

now_s() { echo "$EPOCHREALTIME"; }

# measure MODE THREADS TOOL RUN: appends a row to $DATA
measure() {
    local mode=$1 threads=$2 tool=$3 run=$4
    local out=$WORK/tool.out status=ok hits=- missed=- calls=- rate=- c1 c2
    if [[ $tool == none ]]; then
        c1=$(counter); sleep "$BASE_SECONDS"; c2=$(counter)
        rate=$(awk -v a="$c1" -v b="$c2" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", (y[1] - x[1]) / ((y[2] - x[2]) / 1e9) }')
        echo "$mode $threads none $run ok $rate $rate - -" >> "$DATA"
        return
    fi
    tool_command "$tool"
    : > "$out"
    "${TPIN[@]}" "${CMD[@]}" > "$out" 2>&1 &
    TOOL_PID=$!
    local armed=""
    for _ in $(seq 3000); do # 30 s: frida and gdb start slowly on a CPU shared with 4 spinning threads
        if grep -q -- "$PATTERN" "$out" 2>/dev/null; then armed=1; break; fi
        kill -0 "$TOOL_PID" 2>/dev/null || break
        sleep 0.01
    done
    local t_armed
    t_armed=$(now_s)
    if [[ -n "$armed" ]]; then
        # The victim's own call rate while the hook is armed: its counter every 0.1 s until the tool ends
        # (gdb: until D s after armed, when it is interrupted); the median of the intervals, less the
        # first and the last (the armed line can lag the real arming: graft's does; and the last interval
        # can reach past the tool's detach).
        local samples=$WORK/samples deadline=$((SECONDS + ${D%.*} + 30)) gdb_end=""
        : > "$samples"
        [[ $tool == gdb ]] && gdb_end=$(awk -v t="$t_armed" -v d="$D" 'BEGIN { printf "%.6f", t + d }')
        while kill -0 "$TOOL_PID" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do
            counter >> "$samples"
            if [[ -n "$gdb_end" ]] && awk -v e="$gdb_end" -v n="$EPOCHREALTIME" 'BEGIN { exit !(n >= e) }'; then
                kill -INT "$TOOL_PID" 2>/dev/null || true
                gdb_end=""
                deadline=$((SECONDS + 30))
            fi
            sleep 0.1
        done
        rate=$(awk 'NR > 1 { r[++n] = ($1 - c) / (($2 - t) / 1e9) } { c = $1; t = $2 }
            END { lo = 1; hi = n; if (n >= 4) { lo = 2; hi = n - 1 }; for (i = lo; i <= hi; i++) printf "%.0f\n", r[i] }' "$samples" \
            | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
        kill -0 "$TOOL_PID" 2>/dev/null && status=hung
    else
        status=noarm
    fi
    stop_tool
    local parsed
    # A tool that never said "armed" but reported hits still gets its hits (no victim rate, flagged).
    if [[ $status == ok || $status == hung || $status == noarm ]] && parsed=$(parse_hits "$tool" "$out"); then
        read -r hits missed calls <<< "$parsed"
    elif [[ $status == ok ]]; then
        status=noresult
    fi
    # The victim must still be alive AND calling (a dying victim can linger a moment; a tool could leave
    # it stopped). A crash after the tool reported its hits keeps them (frida reports before it unhooks).
    if ! victim_calling; then
        sleep 0.5
        if kill -0 "$VICTIM_PID" 2>/dev/null && victim_calling; then
            :
        elif kill -0 "$VICTIM_PID" 2>/dev/null && [[ $(awk '{ print $3 }' "/proc/$VICTIM_PID/stat" 2>/dev/null) != Z ]]; then
            status=victim-stuck
            log "$tool left the victim alive but not calling bench_f ($mode, $threads threads, run $run); restarting it"
            stop_victim
            start_victim "$threads"
        else
            local rc=0
            wait "$VICTIM_PID" 2>/dev/null || rc=$?
            if [[ $rc -gt 128 ]]; then status="victim-died-SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"; else status="victim-exited-$rc"; fi
            log "$tool crashed the victim ($mode, $threads threads, run $run: $status); restarting it"
            VICTIM_PID=""
            start_victim "$threads"
        fi
    fi
    if [[ $status != ok ]]; then
        log "$tool, $mode, $threads thread(s), run $run: $status; its output ends with:"
        tail -5 "$out" | sed 's/^/    /' >&2
    fi
    echo "$mode $threads $tool $run $status $hits $rate $missed $calls" >> "$DATA"
}

# --- runs ------------------------------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for mode in $MODES; do
    mode_parts "$mode"
    if [[ $PLACEMENT == pinned ]]; then VPIN=(taskset -c "$CPU"); TPIN=(taskset -c "$CPU"); else VPIN=(); TPIN=(); fi
    for threads in $THREADS; do
        start_victim "$threads"
        # The poller waits for the summary line in the tool's output (every tool's goes to one file).
        if [[ $POLLER == on ]]; then start_poller "$WORK/tool.out" 'ended.by|"hits"'; else stop_poller; fi
        log "$mode, $threads thread(s): victim $VICTIM_PID, bench_f at $ADDR; $R runs of ${D} s per tool"
        for ((r = 1; r <= R; r++)); do
            for tool in $TOOLS; do
                [[ -z "${SKIP[$tool]:-}" ]] || continue
                measure "$mode" "$threads" "$tool" "$r"
                printf '%s ' "$tool" >&2
            done
            echo >&2
        done
        stop_poller
        stop_victim
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ----------------------------------------------------------------------------------------------
# med MODE THREADS TOOL COLUMN -> median over the runs that gave a number (a run whose tool then crashed
# the victim counts: its hits were reported), or "-"  (columns: 6 hits, 7 rate, 8 missed, 9 calls)
med() {
    awk -v m="$1" -v t="$2" -v tool="$3" -v c="$4" '$1==m && $2==t && $3==tool && $c != "-" { print $c }' "$DATA" \
        | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() { # MODE THREADS TOOL COLUMN -> "min max" or "- -"
    awk -v m="$1" -v t="$2" -v tool="$3" -v c="$4" '$1==m && $2==t && $3==tool && $c != "-" { print $c }' "$DATA" \
        | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { if (NR == 0) print "- -"; else print a, b }'
}
okcount() {
    awk -v m="$1" -v t="$2" -v tool="$3" '$1==m && $2==t && $3==tool { n++; ok += ($5 == "ok") } END { printf "%d/%d", ok, n }' "$DATA"
}
failures() { # the statuses of the failed runs, e.g. "victim-died ×2"
    awk -v m="$1" -v t="$2" -v tool="$3" '$1==m && $2==t && $3==tool && $5 != "ok" { n[$5]++ } END { s = ""; for (k in n) s = s (s ? ", " : "") k " ×" n[k]; print s }' "$DATA"
}
# fmt_rate N -> "1.23 M/s", "45.6 k/s", "789 /s"
per_s() { awk -v h="$1" -v d="$2" 'BEGIN { if (h == "-") print "-"; else printf "%.0f\n", h / d }'; }
us_per_hit() { awk -v h="$1" -v d="$2" 'BEGIN { if (h == "-" || h == 0) print "-"; else printf "%.4f\n", d * 1e6 / h }'; }

label() {
    case $1 in
        none) echo "victim unhooked (its calls/s)" ;;
        rearm) echo "C remove/step/re-arm (hook_rearm.c)" ;;
        onestop) echo "C one stop per hit (hook_onestop.c)" ;;
        hwstop) echo "C one stop per hit, DR0 (hook_hwstop.c)" ;;
        gdb) echo "gdb break + commands silent; continue" ;;
        bpftrace) echo "bpftrace uprobe count()" ;;
        frida) echo "frida Interceptor.attach (JS onEnter)" ;;
        graft-text) echo "graft hook (default: a text line per hit)" ;;
        graft-json) echo "graft hook --json (a JSON line per hit)" ;;
        graft-quiet) echo "graft hook --json --quiet (count only)" ;;
        graft-hw-text) echo "graft hook --hardware (DR0; a text line per hit)" ;;
        graft-hw-quiet) echo "graft hook --hardware --json --quiet (DR0; count only)" ;;
    esac
}

report() {
    local cpu kernel
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    kernel=$(uname -r)
    local versions=""
    want gdb && [[ -z "${SKIP[gdb]:-}" ]] && versions+="$(gdb --version | head -1); "
    want bpftrace && [[ -z "${SKIP[bpftrace]:-}" ]] && versions+="bpftrace $(bpftrace --version 2>/dev/null | awk '{ print $2 }'); "
    want frida && [[ -z "${SKIP[frida]:-}" ]] && versions+="frida $(python3 -c 'import frida; print(frida.__version__)'); "
    want_graft && [[ -z "${SKIP[graft-text]:-}${SKIP[graft-json]:-}${SKIP[graft-quiet]:-}" ]] && versions+="$("$GRAFT" --version 2>/dev/null | head -1 | sed 's/^/graft /'); "
    echo "### Hooks: run of $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: nproc=$(nproc), kernel $kernel, CPU $cpu. ${versions%; }."
    echo "D=${D} s armed per run, R=$R runs per cell, median; victim WORK=$WORK_ITERS; pinned = victim and tool on CPU $CPU"
    echo "(taskset), unpinned = no taskset. Load average before/after: $LOAD_BEFORE / $LOAD_AFTER. Took $((SECONDS - START_S)) s."
    echo "Reproduce: \`bench/hooks.sh\` (env BENCH_SECONDS, BENCH_RUNS, BENCH_THREADS, BENCH_MODES, BENCH_TOOLS, GRAFT)."
    echo "Tools: $TOOLS. Modes: $MODES."
    echo
    echo "hits/s = hits ÷ D (median, min–max over the runs); µs/hit = D ÷ hits (with 4 threads: wall time per"
    echo "hit, all threads together); × C pinned = hits/s ÷ the one-stop C program's pinned hits/s at the same"
    echo "thread count (above 1 = faster); cost ÷ C pinned and cost ÷ C same mode = µs/hit ÷ the one-stop C"
    echo "program's µs/hit, pinned or in the row's own mode (above 1 = dearer); unpinned ÷ pinned = the row's"
    echo "µs/hit ÷ its own pinned µs/hit with the same poller setting; victim calls/s = the victim's own count,"
    echo "sampled inside the armed window (more than hits/s = calls the hook did not see); missed = calls − hits,"
    echo "counted exactly by the C tools with every thread stopped (±1 per thread: a count follows its call)."
    echo "+poller = a background shell loop greps the tool's output file for its last line, then sleeps 0.1 s,"
    echo "while the mode's runs go (issue 11 §4)."
    echo
    echo "| tool | threads | mode | hits/s (min–max) | µs/hit | × C pinned | cost ÷ C pinned | cost ÷ C same mode | unpinned ÷ pinned µs/hit | victim calls/s | missed | runs ok |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    local threads tool mode
    for threads in $THREADS; do
        local base base_us
        base=$(per_s "$(med pinned "$threads" onestop 6)" "$D")
        base_us=$(us_per_hit "$base" 1)
        for tool in $TOOLS; do
            if [[ -n "${SKIP[$tool]:-}" ]]; then
                echo "| $(label "$tool") | $threads | – | ${SKIP[$tool]} | | | | | | | | |"
                continue
            fi
            for mode in $MODES; do
                local h hs lo hi us r v m c ok fails up="" cp="" cm="" pin_mode
                mode_parts "$mode"
                pin_mode=pinned; [[ $POLLER == on ]] && pin_mode=pinned+poller
                h=$(med "$mode" "$threads" "$tool" 6)
                if [[ $tool == none ]]; then hs=$h; else hs=$(per_s "$h" "$D"); fi
                read -r lo hi <<< "$(range "$mode" "$threads" "$tool" 6)"
                if [[ $tool != none ]]; then lo=$(per_s "$lo" "$D"); hi=$(per_s "$hi" "$D"); fi
                us=$(us_per_hit "$hs" 1)
                r=$(ratio "$hs" "$base")
                if [[ $tool != none ]]; then
                    cp=$(ratio "$us" "$base_us")
                    cm=$(ratio "$us" "$(us_per_hit "$(per_s "$(med "$mode" "$threads" onestop 6)" "$D")" 1)")
                fi
                v=$(med "$mode" "$threads" "$tool" 7)
                m=$(med "$mode" "$threads" "$tool" 8)
                c=$(med "$mode" "$threads" "$tool" 9)
                ok=$(okcount "$mode" "$threads" "$tool")
                fails=$(failures "$mode" "$threads" "$tool")
                if [[ $PLACEMENT == unpinned && $tool != none && " $MODES " == *" $pin_mode "* ]]; then
                    up=$(ratio "$us" "$(us_per_hit "$(per_s "$(med "$pin_mode" "$threads" "$tool" 6)" "$D")" 1)")
                fi
                if [[ $m != - && $c != - ]]; then
                    m=$(awk -v m="$m" -v c="$c" 'BEGIN { if (c > 0 && (m > 100 || m < -100)) printf "%s of %s (%.2f%%)", m, c, 100 * m / c; else printf "%s of %s", m, c }')
                fi
                local spread=""
                [[ $lo == - ]] || spread=" ($(fmt_short "$lo")–$(fmt_short "$hi"))"
                printf '| %s | %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %s%s |\n' \
                    "$(label "$tool")" "$threads" "$mode" "$(fmt_rate "$hs")" "$spread" \
                    "$([[ $tool == none ]] && echo "–" || fmt_us "$us")" "$r" "${cp:-–}" "${cm:-–}" "${up:-–}" "$(fmt_rate "$v")" "${m/#-/–}" "$ok" "${fails:+ ($fails)}"
            done
        done
    done
    echo
    if want_graft; then
        if [[ -n "${SKIP[graft-text]:-}${SKIP[graft-json]:-}${SKIP[graft-quiet]:-}" ]]; then
            echo "graft hook: not available yet (no \`$GRAFT\`, or \`graft hook --help\` failed): no graft row, no target check."
        else
            echo "Targets for graft (issue 3: ≥ 0.9× the one-stop C program's hits/s pinned, ≥ 10× gdb, unpinned ≤ 1.5×"
            echo "pinned; issue 11: every output mode's pinned cost within 1.1× the C program's, and unpinned ≤ 1.5×"
            echo "pinned with and without the poller):"
            echo
            for threads in $THREADS; do
                for tool in $GRAFT_MODES; do
                    want "$tool" || continue
                    local gp gu cp gdbp gdbu gpp gup cpp
                    gp=$(per_s "$(med pinned "$threads" "$tool" 6)" "$D"); gu=$(per_s "$(med unpinned "$threads" "$tool" 6)" "$D")
                    gpp=$(per_s "$(med pinned+poller "$threads" "$tool" 6)" "$D"); gup=$(per_s "$(med unpinned+poller "$threads" "$tool" 6)" "$D")
                    local base=onestop basename="one-stop C program"
                    # A --hardware row against the C program that also uses DR0, when it ran: the
                    # debug exception costs the kernel more than an int3, whoever handles the stop.
                    if [[ $tool == graft-hw-* ]] && want hwstop; then base=hwstop; basename="C DR0 program"; fi
                    cp=$(per_s "$(med pinned "$threads" "$base" 6)" "$D"); cpp=$(per_s "$(med pinned+poller "$threads" "$base" 6)" "$D")
                    gdbp=$(per_s "$(med pinned "$threads" gdb 6)" "$D"); gdbu=$(per_s "$(med unpinned "$threads" gdb 6)" "$D")
                    awk -v t="$threads" -v tool="${tool#graft-}" -v base="$basename" -v gp="$gp" -v gu="$gu" -v gpp="$gpp" -v gup="$gup" -v cp="$cp" -v cpp="$cpp" -v gdbp="$gdbp" -v gdbu="$gdbu" 'function ok(c) { return c ? "met" : "MISSED" }
                        BEGIN {
                            s = (t == 1) ? "" : "s"
                            p = sprintf("- %s thread%s, %s:", t, s, tool)
                            if (gp != "-" && cp != "-" && gp > 0) printf "%s pinned cost %.2f× the %s'"'"'s (≤ 1.1×): %s\n", p, cp / gp, base, ok(cp <= 1.1 * gp)
                            if (gpp != "-" && cpp != "-" && gpp > 0) printf "%s pinned with the poller, cost %.2f× the %s'"'"'s (≤ 1.1×): %s\n", p, cpp / gpp, base, ok(cpp <= 1.1 * gpp)
                            if (gp != "-" && gdbp != "-" && gdbp > 0) printf "%s pinned %.0f× gdb (≥ 10×): %s\n", p, gp / gdbp, ok(gp >= 10 * gdbp)
                            if (gu != "-" && gdbu != "-" && gdbu > 0) printf "%s unpinned %.0f× gdb (≥ 10×): %s\n", p, gu / gdbu, ok(gu >= 10 * gdbu)
                            if (gu != "-" && gp != "-" && gu > 0) printf "%s unpinned µs/hit %.2f× its pinned figure (≤ 1.5×): %s\n", p, gp / gu, ok(gp <= 1.5 * gu)
                            if (gup != "-" && gpp != "-" && gup > 0) printf "%s with the poller, unpinned µs/hit %.2f× its pinned figure (≤ 1.5×): %s\n", p, gpp / gup, ok(gpp <= 1.5 * gup)
                            if (gup != "-" && gp != "-" && gup > 0) printf "%s with the poller, unpinned µs/hit %.2f× its pinned figure without it (≤ 1.5×): %s\n", p, gp / gup, ok(gp <= 1.5 * gup)
                        }'
                done
            done
        fi
    fi
}

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
log "wrote $OUT"
