#!/usr/bin/env bash
# graft benchmarks, single-step tracing: `bench/trace.sh`. Builds its C baseline with cc into a temporary
# directory and the victim with TestTargets/Makefile, runs every tool, prints a Markdown report and
# writes it to bench/results/trace-<date>.md. About 2 minutes with the defaults.
#
# Steps per second and µs per step, single-stepping ONE thread of .build/victims/trace_busy 1 (a worker
# that loops over small functions and never makes a system call, so no step waits on the kernel), for:
#   c             bench/step_c.c PID TID D: SEIZE + INTERRUPT the thread, then per step PTRACE_SINGLESTEP,
#                 waitpid(TID, __WALL), PTRACE_GETREGS (it reads the PC, as any tracer must to say where
#                 the thread is); nothing else
#   c-noregs      the same with --no-regs: the bare stop/resume cost
#   gdb           gdb -nx -batch -p PID, a Python loop: gdb.execute("stepi", to_string=True) on that thread
#                 for D s (scheduler-locking step, CLI stop notifications suppressed: gdb's cheapest stepi)
#   graft         $GRAFT trace -p PID --tid TID --duration D --summary --json: steps and elapsed_ns from
#                 its last line {"event":"summary","steps":N,…,"elapsed_ns":E}
#   graft-disasm  $GRAFT trace -p PID --tid TID --duration D --disasm --json | tail -1: every step's JSON
#                 line (with its disassembly `text`) goes through the pipe; the summary is the last line
# Each tool runs D seconds by its own clock (its start-up is not timed), R times; medians reported.
# Pinned = victim and tool on the same CPU (taskset -c $BENCH_CPU; for graft-disasm the pipe's tail too);
# unpinned = no taskset; each also "+poller": with a background shell loop that greps the tool's output
# file for its last line and sleeps 0.1 s (issue 11 §4; started for the mode's runs and always killed,
# see bench/lib.sh start_poller). Every row is also given as a ratio to `c` pinned.
# A failing tool does not stop the run: its row says "failed: <reason>". Without a graft binary the
# script stops (build it with `swift build -c release`, set GRAFT=, or leave graft out of BENCH_TOOLS).
#
# Environment:
#   BENCH_SECONDS=3      D, seconds each tool steps
#   BENCH_RUNS=3         R, runs per tool and mode; medians reported
#   BENCH_MODES="pinned unpinned pinned+poller unpinned+poller"
#   BENCH_CPU=1          the CPU for pinned mode
#   BENCH_TOOLS="c c-noregs gdb graft graft-disasm"
#   GRAFT=path           graft binary (default .build/release/graft)
#   BENCH_OUT=path       report file (default bench/results/trace-<UTC date>.md)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=trace
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
D=${BENCH_SECONDS:-3}
R=${BENCH_RUNS:-3}
MODES=${BENCH_MODES:-"pinned unpinned pinned+poller unpinned+poller"}
CPU=${BENCH_CPU:-1}
TOOLS=${BENCH_TOOLS:-"c c-noregs gdb graft graft-disasm"}
GRAFT=${GRAFT:-$ROOT/.build/release/graft}
CC=${CC:-cc}
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${BENCH_OUT:-$ROOT/bench/results/trace-$STAMP.md}
VICTIMS=$ROOT/.build/victims
START_S=$SECONDS


for tool in $TOOLS; do
    case $tool in c|c-noregs|gdb|graft|graft-disasm) ;; *) die "unknown tool in BENCH_TOOLS: $tool (c c-noregs gdb graft graft-disasm)" ;; esac
done
for mode in $MODES; do
    case $mode in pinned|unpinned|pinned+poller|unpinned+poller) ;;
        *) die "unknown mode in BENCH_MODES: $mode (pinned unpinned pinned+poller unpinned+poller)" ;; esac
done
has "$CC" || die "no C compiler ($CC)"
has make || die "no make"
if [[ " $MODES " == *" pinned"* ]] && ! has taskset; then
    log "no taskset: skipping pinned modes"
    MODES=$(tr ' ' '\n' <<< "$MODES" | grep -v '^pinned' | tr '\n' ' ')
fi
[[ $CPU -lt $(nproc) ]] || die "BENCH_CPU=$CPU, but this machine has $(nproc) CPUs"
if { want graft || want graft-disasm; } && [[ ! -x "$GRAFT" ]]; then
    die "no graft binary at $GRAFT: run \`swift build -c release\`, set GRAFT=path, or run without graft: BENCH_TOOLS=\"c c-noregs gdb\""
fi
declare -A SKIP=() # tool -> why it is not measured
if want gdb && ! has gdb; then SKIP[gdb]="gdb not installed (apt-get install gdb)"; fi

# --- build -----------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/graft-trace.XXXXXX")
VICTIM_PID=""
TOOL_PID=""
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

"$CC" -O2 -Wall -o "$WORK/step_c" "$ROOT/bench/step_c.c"
make -s -C "$ROOT/TestTargets" OUT="$VICTIMS" "$VICTIMS/trace_busy" >&2 || die "building the victim failed"
VICTIM=$VICTIMS/trace_busy

cat > "$WORK/gdb_step.py" <<'EOF'
# stepi one thread for D seconds: env STEP_TID, STEP_SECONDS; prints `steps N seconds S`
import os, time
import gdb
for cmd in ("set pagination off", "set confirm off", "set width 0", "set scheduler-locking step",
            "set suppress-cli-notifications on", "set print thread-events off"):
    try:
        gdb.execute(cmd, to_string=True)
    except gdb.error:
        pass
tid = int(os.environ["STEP_TID"])
seconds = float(os.environ["STEP_SECONDS"])
for t in gdb.selected_inferior().threads():
    if t.ptid[1] == tid:
        t.switch()
        break
else:
    raise gdb.GdbError("no thread %d" % tid)
steps = 0
start = time.monotonic()
deadline = start + seconds
now = start
while now < deadline:
    gdb.execute("stepi", to_string=True)
    steps += 1
    now = time.monotonic()
print("steps %d seconds %.6f" % (steps, now - start))
gdb.execute("detach", to_string=True)
EOF

# --- the victim ------------------------------------------------------------------------------------------
VPIN=()
TPIN=()
start_victim() {
    # No core file if a tool crashes it; the subshell execs (taskset execs too): $! is the victim's pid.
    (ulimit -c 0; exec "${VPIN[@]}" "$VICTIM" 1 3600) > "$WORK/victim.out" 2>&1 &
    VICTIM_PID=$!
    for _ in $(seq 500); do grep -q '^tids ' "$WORK/victim.out" 2>/dev/null && break; sleep 0.01; done
    TID=$(awk '/^tids / { print $2; exit }' "$WORK/victim.out")
    [[ -n "$TID" ]] || die "the victim did not start: $(cat "$WORK/victim.out")"
}
thread_state() { awk '{ print $3 }' "/proc/$VICTIM_PID/task/$TID/stat" 2>/dev/null || echo gone; }
victim_ok() { # alive, and its worker running (not left in a ptrace stop)
    local s
    for _ in $(seq 20); do
        s=$(thread_state)
        [[ $s == R || $s == S ]] && return 0
        [[ $s == gone || $s == Z ]] && return 1
        sleep 0.05
    done
    return 1
}

# --- one measurement -------------------------------------------------------------------------------------
DATA=$WORK/data # mode tool run status rate(steps/s) steps seconds
: > "$DATA"
declare -A REASON=() # "mode tool" -> the last failure's reason

# run_tool TOOL OUTFILE ERRFILE: runs it (pinned per TPIN), with a timeout
run_tool() {
    local tool=$1 out=$2 err=$3 limit
    limit=$(awk -v d="$D" 'BEGIN { printf "%d", d + 60 }')
    local T=(timeout -k 5 "$limit")
    case $tool in # stdin /dev/null: no tool reads the terminal
        c) "${T[@]}" "${TPIN[@]}" "$WORK/step_c" "$VICTIM_PID" "$TID" "$D" ;;
        c-noregs) "${T[@]}" "${TPIN[@]}" "$WORK/step_c" --no-regs "$VICTIM_PID" "$TID" "$D" ;;
        gdb) STEP_TID=$TID STEP_SECONDS=$D "${T[@]}" "${TPIN[@]}" gdb -nx -q -batch -iex 'set debuginfod enabled off' \
                 -p "$VICTIM_PID" -x "$WORK/gdb_step.py" ;;
        graft) "${T[@]}" "${TPIN[@]}" "$GRAFT" trace -p "$VICTIM_PID" --tid "$TID" --duration "$D" --summary --json ;;
        graft-disasm) "${T[@]}" "${TPIN[@]}" "$GRAFT" trace -p "$VICTIM_PID" --tid "$TID" --duration "$D" --disasm --json \
                          | "${TPIN[@]}" tail -1 ;;
    esac < /dev/null > "$out" 2> "$err"
}

# parse TOOL OUTFILE -> "steps seconds", or fails
parse() {
    local tool=$1 f=$2 line steps ns
    case $tool in
        c|c-noregs|gdb)
            line=$(grep '^steps [0-9]* seconds ' "$f" | tail -1) || return 1
            awk '{ print $2, $4 }' <<< "$line" ;;
        graft|graft-disasm)
            line=$(grep '"event":"summary"' "$f" | tail -1) || return 1
            steps=$(grep -o '"steps":[0-9]*' <<< "$line" | head -1 | cut -d: -f2)
            ns=$(grep -o '"elapsed_ns":[0-9]*' <<< "$line" | head -1 | cut -d: -f2)
            [[ -n "$steps" && -n "$ns" ]] || return 1
            awk -v s="$steps" -v n="$ns" 'BEGIN { printf "%s %.6f\n", s, n / 1e9 }' ;;
    esac
}

# measure MODE TOOL RUN: appends a row to $DATA
measure() {
    local mode=$1 tool=$2 run=$3 out=$WORK/tool.out err=$WORK/tool.err rc=0 status=ok parsed steps=- secs=- rate=-
    : > "$out"; : > "$err"
    run_tool "$tool" "$out" "$err" || rc=$?
    if parsed=$(parse "$tool" "$out"); then
        read -r steps secs <<< "$parsed"
        rate=$(awk -v s="$steps" -v t="$secs" 'BEGIN { if (t > 0) printf "%.0f\n", s / t; else print "-" }')
        [[ $rc == 0 ]] || log "$tool ($mode, run $run) exited $rc after reporting its steps"
    else
        local why
        why=$(grep -v '^\s*$' "$err" | grep -iv 'warning' | head -1 | cut -c1-160 || true)
        [[ $rc == 124 || $rc == 137 ]] && why="timed out after $((${D%.*} + 60)) s${why:+: $why}"
        [[ -n "$why" ]] || why="exit status $rc, no result line"
        status=failed
        REASON["$mode $tool"]=$why
        log "$tool, $mode, run $run: failed: $why"
    fi
    if ! victim_ok; then
        local s
        s=$(thread_state)
        log "$tool left the victim's worker in state $s ($mode, run $run); restarting it"
        [[ $status == ok ]] && { status=failed; REASON["$mode $tool"]="left the victim in state $s"; }
        stop_victim
        start_victim
    fi
    echo "$mode $tool $run $status $rate $steps $secs" >> "$DATA"
}

# --- runs ------------------------------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for mode in $MODES; do
    mode_parts "$mode"
    if [[ $PLACEMENT == pinned ]]; then VPIN=(taskset -c "$CPU"); TPIN=(taskset -c "$CPU"); else VPIN=(); TPIN=(); fi
    start_victim
    # The poller waits for the result line in the tool's output (every tool's goes to one file).
    if [[ $POLLER == on ]]; then start_poller "$WORK/tool.out" '^steps |"event":"summary"'; else stop_poller; fi
    log "$mode: victim $VICTIM_PID, worker thread $TID; $R runs of ${D} s per tool"
    for ((r = 1; r <= R; r++)); do
        for tool in $TOOLS; do
            [[ -z "${SKIP[$tool]:-}" ]] || continue
            measure "$mode" "$tool" "$r"
            printf '%s ' "$tool" >&2
        done
        echo >&2
    done
    stop_poller
    stop_victim
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ----------------------------------------------------------------------------------------------
med() { # MODE TOOL -> median steps/s over the runs that gave one, or "-"
    awk -v m="$1" -v tool="$2" '$1==m && $2==tool && $5 != "-" { print $5 }' "$DATA" \
        | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() { # MODE TOOL -> "min max" or "- -"
    awk -v m="$1" -v tool="$2" '$1==m && $2==tool && $5 != "-" { print $5 }' "$DATA" \
        | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { if (NR == 0) print "- -"; else print a, b }'
}
okcount() { awk -v m="$1" -v tool="$2" '$1==m && $2==tool { n++; ok += ($4 == "ok") } END { printf "%d/%d", ok, n }' "$DATA"; }
us_per_step() { awk -v r="$1" 'BEGIN { if (r == "-" || r == 0) print "-"; else printf "%.4f\n", 1e6 / r }'; }

label() {
    case $1 in
        c) echo "C loop, GETREGS each step (step_c.c)" ;;
        c-noregs) echo "C loop, no GETREGS (step_c.c --no-regs)" ;;
        gdb) echo "gdb Python loop of stepi" ;;
        graft) echo "graft trace --summary --json" ;;
        graft-disasm) echo "graft trace --disasm --json \| tail -1" ;;
    esac
}

report() {
    local cpu kernel versions=""
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    kernel=$(uname -r)
    if want gdb && [[ -z "${SKIP[gdb]:-}" ]]; then versions+="$(gdb --version 2>/dev/null | head -1 || true); "; fi
    if want graft || want graft-disasm; then
        local gv
        gv=$("$GRAFT" --version 2>/dev/null | head -1 || true)
        versions+="graft ${gv:-(no --version)}; "
    fi
    echo "### Single-step tracing: run of $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: nproc=$(nproc), kernel $kernel, CPU $cpu.${versions:+ ${versions%; }.}"
    echo "Victim: \`.build/victims/trace_busy 1\` (one worker looping over small functions, never in a system call),"
    echo "its worker thread stepped. D=${D} s of stepping per run (the tool's own clock; start-up not timed), R=$R runs"
    echo "per cell, median; pinned = victim and tool on CPU $CPU (taskset), unpinned = no taskset; +poller = a"
    echo "background shell loop greps the tool's output file for its result line, then sleeps 0.1 s (issue 11 §4)."
    echo "Load average before/after: $LOAD_BEFORE / $LOAD_AFTER. Took $((SECONDS - START_S)) s."
    echo "Reproduce: \`bench/trace.sh\` (env BENCH_SECONDS, BENCH_RUNS, BENCH_MODES, BENCH_CPU, BENCH_TOOLS, GRAFT)."
    echo
    echo "steps/s = steps ÷ the tool's stepping time (median, min–max over the runs); µs/step = 1 ÷ steps/s;"
    echo "× C pinned = steps/s ÷ the C loop's (with GETREGS) pinned steps/s; unpinned ÷ pinned = this tool's"
    echo "unpinned µs/step ÷ its pinned µs/step with the same poller setting."
    echo
    echo "| tool | mode | steps/s (min–max) | µs/step | × C pinned | unpinned ÷ pinned µs/step | runs ok |"
    echo "|---|---|---|---|---|---|---|"
    local base tool mode
    base=$(med pinned c)
    for tool in $TOOLS; do
        if [[ -n "${SKIP[$tool]:-}" ]]; then
            echo "| $(label "$tool") | – | ${SKIP[$tool]} | | | | |"
            continue
        fi
        for mode in $MODES; do
            local rs lo hi us up="" ok cell pin_mode
            mode_parts "$mode"
            pin_mode=pinned; [[ $POLLER == on ]] && pin_mode=pinned+poller
            rs=$(med "$mode" "$tool")
            read -r lo hi <<< "$(range "$mode" "$tool")"
            us=$(us_per_step "$rs")
            ok=$(okcount "$mode" "$tool")
            if [[ $PLACEMENT == unpinned && " $MODES " == *" $pin_mode "* ]]; then
                up=$(ratio "$us" "$(us_per_step "$(med "$pin_mode" "$tool")")")
            fi
            if [[ $rs == - ]]; then
                cell="failed: ${REASON["$mode $tool"]:-no result}"
                cell=${cell//|/\\|}
            else
                cell="$(fmt_rate "$rs") ($(fmt_short "$lo")–$(fmt_short "$hi"))"
                [[ -z "${REASON["$mode $tool"]:-}" ]] || cell+="; a run failed: ${REASON["$mode $tool"]//|/\\|}"
            fi
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$tool")" "$mode" "$cell" "$(fmt_us "$us")" \
                "$(ratio "$rs" "$base")" "${up:-–}" "$ok"
        done
    done
    echo
    echo "Targets (issue: single-step trace) for graft without --disasm:"
    echo
    local gp gu cp gdbp gdbu gpp gup
    gp=$(med pinned graft); gu=$(med unpinned graft); cp=$(med pinned c)
    gpp=$(med pinned+poller graft); gup=$(med unpinned+poller graft)
    gdbp=$(med pinned gdb); gdbu=$(med unpinned gdb)
    want graft || { gp=-; gu=-; gpp=-; gup=-; }
    awk -v gpp="$gpp" -v gup="$gup" -v gp="$gp" -v gu="$gu" -v cp="$cp" -v gdbp="$gdbp" -v gdbu="$gdbu" -v measured="$(want graft && echo 1 || echo 0)" '
        function ok(c) { return c ? "met" : "MISSED" }
        function na(why) { return "not measured (" why ")" }
        BEGIN {
            g = measured ? "graft failed" : "graft not in BENCH_TOOLS"
            if (gp != "-" && cp != "-") printf "- pinned: %.2f× the pinned C loop with GETREGS (≥ 0.8×): %s\n", gp / cp, ok(gp >= 0.8 * cp)
            else printf "- pinned: ≥ 0.8× the pinned C loop with GETREGS: %s\n", na(gp == "-" ? g : "no C result")
            if (gp != "-" && gdbp != "-" && gdbp > 0) printf "- pinned: %.0f× gdb (≥ 10×): %s\n", gp / gdbp, ok(gp >= 10 * gdbp)
            else printf "- pinned: ≥ 10× gdb: %s\n", na(gp == "-" ? g : "no gdb result")
            if (gu != "-" && gdbu != "-" && gdbu > 0) printf "- unpinned: %.0f× gdb (≥ 10×): %s\n", gu / gdbu, ok(gu >= 10 * gdbu)
            else printf "- unpinned: ≥ 10× gdb: %s\n", na(gu == "-" ? g : "no gdb result")
            if (gu != "-" && gp != "-" && gu > 0) printf "- unpinned µs/step %.2f× the pinned figure (≤ 1.5×): %s\n", gp / gu, ok(gp <= 1.5 * gu)
            else printf "- unpinned µs/step ≤ 1.5× pinned: %s\n", na(g)
            if (gup != "-" && gpp != "-" && gup > 0) printf "- with the poller, unpinned µs/step %.2f× the pinned figure (≤ 1.5×, issue 11 §4): %s\n", gpp / gup, ok(gpp <= 1.5 * gup)
            if (gup != "-" && gp != "-" && gup > 0) printf "- with the poller, unpinned µs/step %.2f× the pinned figure without it (≤ 1.5×): %s\n", gp / gup, ok(gp <= 1.5 * gup)
        }'
    echo
    echo "Notes: the C loop is the floor for a ptrace single-stepper (one SINGLESTEP + one waitpid per step;"
    echo "GETREGS adds one more system call). gdb steps with \`scheduler-locking step\` (only that thread runs) and"
    echo "its CLI stop notifications suppressed, so it prints nothing per step. graft-disasm's per-step JSON lines,"
    echo "each with the instruction's disassembly \`text\`, all go through a pipe into \`tail -1\` (pinned with"
    echo "the tool in pinned mode), which keeps only the summary line."
}

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
log "wrote $OUT"
