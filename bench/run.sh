#!/usr/bin/env bash
# graft benchmarks: `make bench` (builds graft in release first) or `bench/run.sh` directly.
#
# Jump patch: stop window. How long the target is stopped while a 5-byte jump is written, for a 1- and an
# 8-thread victim (bench/victim_gap.c), for three tools writing the SAME bytes at the same address:
#   graft   `graft patch -p PID bench_target --to bench_other --json`, reverted by `graft unpatch --all`
#   C       bench/c_patch.c: SEIZE+INTERRUPT every thread, PEEK/POKETEXT, DETACH; nothing else
#   gdb     `gdb -nx -batch -p PID -ex 'set {unsigned char[5]}ADDR = {…}'`, and a second gdb restoring
# plus `none`: no tool at all, the victim's noise floor over a comparable interval.
# After every operation the victim reports the largest gap it saw (see victim_gap.c for the three kinds).
#
# Environment:
#   GRAFT=path       graft binary (default .build/release/graft)
#   RUNS=N           runs per tool, thread count and mode (default 21)
#   THREADS="1 8"    victim thread counts
#   MODES="unpinned pinned rt"   pinned: victim on CPU 1, every tool on CPU 0 (taskset);
#                    nice: unpinned, every tool at nice -20; rt: unpinned, every tool SCHED_FIFO 1
#                    (chrt -f 1); both root only
#   DOC=path         Markdown output (default docs/benchmarks.md); DOC= (empty) writes nothing
#   DOC_NOTES=path   hand-written analysis appended to the section (default bench/stop_window_notes.md)
#   KEEP_DATA=path   keep the raw rows (mode threads tool op gap held raw self wall stopped ok; ns)
#   NO_GDB=1         skip gdb
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/.build/bench"
GRAFT=${GRAFT:-$ROOT/.build/release/graft}
RUNS=${RUNS:-21}
THREADS=${THREADS:-"1 8"}
MODES=${MODES:-"unpinned pinned rt"}
DOC=${DOC-$ROOT/docs/benchmarks.md}
DOC_NOTES=${DOC_NOTES-$ROOT/bench/stop_window_notes.md}
NO_GDB=${NO_GDB:-}
CC=${CC:-cc}

die() { echo "bench: $*" >&2; exit 1; }

[[ -x "$GRAFT" ]] || die "no graft binary at $GRAFT: run \`swift build -c release\` (or \`make bench\`), or set GRAFT=path"
command -v "$CC" >/dev/null || die "no C compiler ($CC)"
if [[ -z "$NO_GDB" ]] && ! command -v gdb >/dev/null; then
    echo "bench: gdb not found: skipping the gdb baseline (apt-get install gdb)" >&2
    NO_GDB=1
fi
if [[ " $MODES " == *" pinned "* ]] && { ! command -v taskset >/dev/null || [[ $(nproc) -lt 2 ]]; }; then
    echo "bench: pinned mode needs taskset and 2 CPUs: skipping it" >&2
    MODES=$(tr ' ' '\n' <<< "$MODES" | grep -vx pinned | tr '\n' ' ')
fi
if [[ $(id -u) != 0 ]] && [[ " $MODES " == *" nice "* || " $MODES " == *" rt "* ]]; then
    echo "bench: the nice and rt modes need root: skipping them" >&2
    MODES=$(tr ' ' '\n' <<< "$MODES" | grep -vx 'nice\|rt' | tr '\n' ' ')
fi

mkdir -p "$OUT"
# CET off: the victim's functions must start with the 5-byte nop, not endbr64.
"$CC" -O2 -Wall -fcf-protection=none -pthread -o "$OUT/victim_gap.tmp" "$ROOT/bench/victim_gap.c" && mv "$OUT/victim_gap.tmp" "$OUT/victim_gap"
"$CC" -O2 -Wall -o "$OUT/c_patch.tmp" "$ROOT/bench/c_patch.c" && mv "$OUT/c_patch.tmp" "$OUT/c_patch"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/graft-bench.XXXXXX")
DATA="$WORK/data"
: > "$DATA"
VICTIM_PID=""
cleanup() {
    if [[ -n "$VICTIM_PID" ]]; then kill "$VICTIM_PID" 2>/dev/null || true; wait "$VICTIM_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_us() { local t=$EPOCHREALTIME; echo $(( ${t%.*} * 1000000 + 10#${t#*.} )); }

# --- the victim --------------------------------------------------------------------------------------
start_victim() { # threads pin-prefix...
    local threads=$1; shift
    coproc VICTIM { exec "$@" "$OUT/victim_gap" "$threads" 600; }
    VICTIM_PID=$VICTIM_PID
    local line
    read -r -t 10 -u "${VICTIM[0]}" line || die "the victim did not start"
    [[ "$line" == ready ]] || die "the victim said: $line"
}

stop_victim() {
    kill "$VICTIM_PID" 2>/dev/null || true
    wait "$VICTIM_PID" 2>/dev/null || true
    VICTIM_PID=""
}

# Asks the victim for its report (and resets it). Sets GAP HELD RAW STOPPED STATE.
query_victim() {
    kill -0 "$VICTIM_PID" 2>/dev/null || die "the victim died (a tool crashed it?)"
    kill -USR1 "$VICTIM_PID"
    local line
    while true; do
        read -r -t 10 -u "${VICTIM[0]}" line || die "the victim did not answer"
        [[ "$line" == gap_ns=* ]] && break
    done
    local kv
    for kv in $line; do
        case $kv in
            gap_ns=*) GAP=${kv#*=} ;;
            held_ns=*) HELD=${kv#*=} ;;
            raw_ns=*) RAW=${kv#*=} ;;
            stopped=*) STOPPED=${kv#*=} ;;
            state=*) STATE=${kv#*=} ;;
            lagging=*) LAGGING=${kv#*=} ;;
        esac
    done
}

# Runs one tool operation between two victim reports and appends a data row.
# measure MODE THREADS TOOL OP EXPECTED-STATE command...
measure() {
    local mode=$1 threads=$2 tool=$3 op=$4 expect=$5; shift 5
    query_victim # reset
    local t0 t1 rc=0
    t0=$(now_us)
    "$@" > "$WORK/out" 2> "$WORK/err" || rc=$?
    t1=$(now_us)
    [[ $rc == 0 ]] || die "$tool $op failed ($rc): $(head -c 600 "$WORK/err")"
    query_victim
    local self
    self=$(grep -o '"stop_window_ns":[0-9]*' "$WORK/out" | head -1 | cut -d: -f2 || true)
    local ok=1
    [[ "$STATE" == "$expect" ]] || ok=0
    [[ "$tool" == none || "$STOPPED" == "$threads" ]] || ok=0
    [[ "$LAGGING" == 0 ]] || ok=0
    echo "$mode $threads $tool $op $GAP $HELD $RAW ${self:--} $(( (t1 - t0) * 1000 )) $STOPPED $ok" >> "$DATA"
}

# --- runs ----------------------------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for mode in $MODES; do
    case $mode in
        pinned) VPIN=(taskset -c 1); TPIN=(taskset -c 0) ;;
        nice) VPIN=(); TPIN=(nice -n -20) ;;
        rt) VPIN=(); TPIN=(chrt -f 1) ;;
        *) VPIN=(); TPIN=() ;;
    esac
    for threads in $THREADS; do
        start_victim "$threads" "${VPIN[@]}"
        plan=$("$GRAFT" patch -p "$VICTIM_PID" bench_target --to bench_other --dry-run --json) || die "graft patch --dry-run failed"
        addr=$(grep -o '"address":"0x[0-9a-f]*"' <<< "$plan" | head -1 | cut -d'"' -f4)
        new=$(grep -o '"new_bytes":"[0-9a-f]*"' <<< "$plan" | cut -d'"' -f4)
        old=$(grep -o '"original_bytes":"[0-9a-f]*"' <<< "$plan" | cut -d'"' -f4)
        [[ -n "$addr" && ${#new} == 10 && ${#old} == 10 ]] || die "unexpected plan: $plan"
        gdb_bytes() { local h=$1 out="" i; for ((i = 0; i < ${#h}; i += 2)); do out+="${out:+,}0x${h:i:2}"; done; echo "{$out}"; }
        GDB=(gdb -nx -q -batch -iex 'set debuginfod enabled off' -p "$VICTIM_PID")
        echo "bench: $mode, $threads thread(s), victim $VICTIM_PID, bench_target at $addr: $old -> $new, $RUNS runs" >&2
        # Each tool applies then reverts; the tools' order rotates from run to run, so that none
        # always follows another (a tool run right after another meets the caches, and the kernel
        # paths, that one left; in the fixed order of before 2026-12-01 c_patch always ran right
        # after graft, gdb right after c_patch).
        tools=(graft C)
        [[ -z "$NO_GDB" ]] && tools+=(gdb)
        for ((r = 1; r <= RUNS; r++)); do
            measure "$mode" "$threads" none idle original sleep 0.05
            for ((k = 0; k < ${#tools[@]}; k++)); do
                case ${tools[$(( (r + k) % ${#tools[@]} ))]} in
                    graft)
                        measure "$mode" "$threads" graft apply patched "${TPIN[@]}" "$GRAFT" patch -p "$VICTIM_PID" bench_target --to bench_other --json
                        measure "$mode" "$threads" graft revert original "${TPIN[@]}" "$GRAFT" unpatch -p "$VICTIM_PID" --all --json ;;
                    C)
                        measure "$mode" "$threads" C apply patched "${TPIN[@]}" "$OUT/c_patch" "$VICTIM_PID" "$addr" "$new"
                        measure "$mode" "$threads" C revert original "${TPIN[@]}" "$OUT/c_patch" "$VICTIM_PID" "$addr" "$old" ;;
                    gdb)
                        measure "$mode" "$threads" gdb apply patched "${TPIN[@]}" "${GDB[@]}" -ex "set {unsigned char[5]}$addr = $(gdb_bytes "$new")"
                        measure "$mode" "$threads" gdb revert original "${TPIN[@]}" "${GDB[@]}" -ex "set {unsigned char[5]}$addr = $(gdb_bytes "$old")" ;;
                esac
            done
            printf '.' >&2
        done
        echo >&2
        stop_victim
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
[[ -n "${KEEP_DATA:-}" ]] && cp "$DATA" "$KEEP_DATA"

# --- statistics ----------------------------------------------------------------------------------------
# stat MODE THREADS TOOL OP COLUMN -> "median p90" (nearest rank) in ns, or "- -"
stat() {
    awk -v m="$1" -v t="$2" -v tool="$3" -v op="$4" -v c="$5" '$1==m && $2==t && $3==tool && $4==op && $c != "-" { print $c }' "$DATA" \
        | sort -n | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "- -"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            p = int(0.9 * NR); if (p < 0.9 * NR) p++
            print m, v[p] }'
}
# fmt NS -> "12.3 µs" / "4.56 ms" / "1.23 s"
fmt() {
    awk -v x="$1" 'BEGIN {
        if (x == "-") { print "–"; exit }
        if (x < 1e6) printf "%.0f µs\n", x / 1e3
        else if (x < 1e9) printf "%.2f ms\n", x / 1e6
        else printf "%.2f s\n", x / 1e9 }'
}
cell() { local s; s=$(stat "$@"); fmt "${s% *}" | tr -d '\n'; printf ' (%s)' "$(fmt "${s#* }")"; }
med() { local s; s=$(stat "$@"); echo "${s% *}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "–"; else printf "%.2f×\n", a / b }'; }
okcount() { awk -v m="$1" -v t="$2" -v tool="$3" -v op="$4" '$1==m && $2==t && $3==tool && $4==op { n++; ok += $11 } END { printf "%d/%d", ok, n }' "$DATA"; }

# Columns of a data row: 1 mode 2 threads 3 tool 4 op 5 gap 6 held 7 raw 8 self 9 wall 10 stopped 11 ok
report() {
    local cpu kernel
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    kernel=$(uname -r)
    echo "## Jump patch: stop window"
    echo
    echo "How long the target is stopped while a 5-byte \`jmp rel32\` is written over the entry of a hot"
    echo "function, and how long the whole command takes. Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) vCPUs"
    echo "($cpu, KVM), kernel $kernel, $("$GRAFT" --version 2>/dev/null | head -1 | sed 's/^/graft /' || echo graft),"
    echo "$(gdb --version 2>/dev/null | head -1 || echo 'no gdb'). $RUNS runs per cell; median (p90). Load average before/after: $LOAD_BEFORE / $LOAD_AFTER."
    echo "Reproduce: \`make bench\`, or \`bench/run.sh\` (env RUNS, THREADS, MODES, GRAFT; see the script's header)."
    echo
    echo "- **Victim** (\`bench/victim_gap.c\`): N threads spin on \`clock_gettime(CLOCK_MONOTONIC)\` and call"
    echo "  \`bench_target()\` each iteration; after each operation it reports its largest gap between two"
    echo "  clock reads. *Victim gap*: a gap that contains a voluntary context switch (a ptrace-stop is one,"
    echo "  preemption is not), so CPU contention alone does not count. *Held*: that gap minus the time the"
    echo "  thread then waited on a run queue (\`run_delay\`, /proc/thread-self/schedstat): how long the tool"
    echo "  kept it stopped, the same yardstick for every tool. *Self*: the tool's own clock up to its last"
    echo "  PTRACE_DETACH, from just before its first PTRACE_SEIZE (graft, \`--json\` \`stop_window_ns\`) or from"
    echo "  just after it, before the first PTRACE_INTERRUPT (c_patch prints it); gdb reports none."
    echo "  *Wall*: the whole command, fork/exec included. \`none\` is no tool, 50 ms of sleep: the noise floor."
    echo "- **Tools** write the same 5 bytes at the same address (graft's \`--dry-run --json\` plan):"
    echo "  graft (\`patch … --to bench_other\` / \`unpatch --all\`), \`bench/c_patch.c\` (SEIZE+INTERRUPT all,"
    echo "  POKETEXT, DETACH; nothing else), gdb (\`gdb -nx -batch -p PID -ex 'set {unsigned char[5]}ADDR = {…}'\`)."
    echo "  Each run measures \`none\`, then every tool's apply and revert, the tools in an order that rotates"
    echo "  from run to run (none always follows another)."
    echo "- **Modes**: *unpinned* lets the scheduler place everything (the default way to run any tool);"
    echo "  *pinned* runs the victim on CPU 1 and the tool on CPU 0 (\`taskset\`); *rt* is unpinned with the"
    echo "  tool in SCHED_FIFO (\`chrt -f 1\`) (*nice*, \`nice -n -20\`, is available too). The 8-thread victim"
    echo "  oversubscribes 2 vCPUs 4×: its threads queue for a CPU all the time, and so does the tool each"
    echo "  time waitpid wakes it."
    echo
    local mode threads tool op
    for mode in $MODES; do
        echo "### $mode"
        echo
        echo "| threads | tool | op | victim gap | held | self-reported | wall | victim raw max gap (incl. preemption) | checks ok |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for threads in $THREADS; do
            for tool in none graft C gdb; do
                for op in idle apply revert; do
                    [[ $(awk -v m="$mode" -v t="$threads" -v tool="$tool" -v op="$op" '$1==m && $2==t && $3==tool && $4==op' "$DATA" | wc -l) -gt 0 ]] || continue
                    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$threads" "$tool" "$op" \
                        "$(cell "$mode" "$threads" "$tool" "$op" 5)" "$(cell "$mode" "$threads" "$tool" "$op" 6)" \
                        "$(cell "$mode" "$threads" "$tool" "$op" 8)" "$(cell "$mode" "$threads" "$tool" "$op" 9)" \
                        "$(cell "$mode" "$threads" "$tool" "$op" 7)" \
                        "$(okcount "$mode" "$threads" "$tool" "$op")"
                done
            done
        done
        echo
        echo "Ratios of medians, apply (revert):"
        echo
        echo "| threads | graft/C held | graft/C self | graft/C wall | gdb/graft held | gdb/graft wall |"
        echo "|---|---|---|---|---|---|"
        local col a b
        for threads in $THREADS; do
            row="| $threads"
            for pair in "graft C 6" "graft C 8" "graft C 9" "gdb graft 6" "gdb graft 9"; do
                set -- $pair
                a=$(ratio "$(med "$mode" "$threads" "$1" apply "$3")" "$(med "$mode" "$threads" "$2" apply "$3")")
                b=$(ratio "$(med "$mode" "$threads" "$1" revert "$3")" "$(med "$mode" "$threads" "$2" revert "$3")")
                row+=" | $a ($b)"
            done
            echo "$row |"
        done
        echo
    done
    echo "Target (issue): graft's stop window within 2× of the minimal C program, and under 1 ms with 8 threads."
    echo "Judged on *held* (the victim's yardstick, the same for every tool); graft's and c_patch's self-reports"
    echo "are shown beside it (they do not start at the same instant: graft stamps just before its first"
    echo "PTRACE_SEIZE, c_patch just after it)."
    echo
    for mode in $MODES; do
        for threads in $THREADS; do
            local op
            for op in apply revert; do
                local gh ch gs cs
                gh=$(med "$mode" "$threads" graft "$op" 6); ch=$(med "$mode" "$threads" C "$op" 6)
                gs=$(med "$mode" "$threads" graft "$op" 8); cs=$(med "$mode" "$threads" C "$op" 8)
                awk -v m="$mode" -v t="$threads" -v op="$op" -v gh="$gh" -v ch="$ch" -v gs="$gs" -v cs="$cs" 'BEGIN {
                    line = sprintf("- %s, %s thread%s, %s: held %.0f µs vs C %.0f µs = %.2f×: within 2× %s",
                        m, t, t == 1 ? "" : "s", op, gh / 1e3, ch / 1e3, gh / ch, gh <= 2 * ch ? "met" : "MISSED")
                    if (t == 8) line = line sprintf("; under 1 ms %s", gh < 1e6 ? "met" : "MISSED")
                    if (gs != "-" && cs != "-") line = line sprintf(" (self-reported: %.0f µs vs %.0f µs = %.2f×)", gs / 1e3, cs / 1e3, gs / cs)
                    print line "." }'
            done
        done
    done
    echo
    echo "\`checks ok\`: runs where every victim thread reported a stop and \`bench_target()\` returned what the"
    echo "operation should have left (2 after apply, 1 after revert)."
}

REPORT=$(report)
echo "$REPORT"

# --- docs/benchmarks.md: replace (or add) this section, keep the others ---------------------------------
if [[ -n "$DOC" ]]; then
    mkdir -p "$(dirname "$DOC")"
    if [[ ! -s "$DOC" ]]; then
        {
            echo "# Benchmarks"
            echo
            echo "Every benchmark compares graft against a named baseline in the same run and reports a ratio;"
            echo "the tests never assert on time. Each section is produced by \`bench/run.sh\` (\`make bench\`)."
            echo
        } > "$DOC"
    fi
    SECTION="$WORK/section.md"
    printf '%s\n' "$REPORT" > "$SECTION"
    if [[ -n "${DOC_NOTES:-}" && -s "$DOC_NOTES" ]]; then { echo; cat "$DOC_NOTES"; } >> "$SECTION"; fi
    awk -v section="$SECTION" '
        BEGIN { title = "## Jump patch: stop window" }
        $0 == title { while ((getline l < section) > 0) print l; print ""; skip = 1; done = 1; next }
        skip && /^## / { skip = 0 }
        !skip { print }
        END { if (!done) { print ""; while ((getline l < section) > 0) print l } }
    ' "$DOC" > "$WORK/doc" && cat -s "$WORK/doc" > "$DOC"
    echo "bench: wrote $DOC" >&2
fi
