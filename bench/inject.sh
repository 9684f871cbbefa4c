#!/usr/bin/env bash
# graft benchmarks, loading new code: `bench/inject.sh` (root; needs .build/release/graft: `make release`).
# Builds its programs with cc into a temporary directory, runs everything, prints a Markdown report and
# writes it to bench/results/inject-<date>.md, every measurement to bench/results/inject-<date>.raw.
# About 3 minutes with the defaults.
#
# 1. wall: the wall time of the command(s) that make a running price_service (TestTargets/price_service.c,
#    8 busy worker threads calling price()) call a library's replacement fixed_price(). Each run starts a
#    fresh victim (not timed), runs one tool, checks that the victim now prints the fixed price
#    (price(150)=1500 instead of -1500) and is alive, then stops it. Tools:
#      graft        `graft inject -p PID libfix.so --json` then `graft patch -p PID price --library
#                   libfix.so --to fixed_price --json` (two commands, each timed; the row is their sum).
#                   libfix.so (examples/inject/libfix.c) calls the original price() through
#                   graft_original_fixed_price: graft builds a trampoline. Then `graft unpatch -p PID --all
#                   --json`, timed separately (revert + unload), and checked: price(150)=-1500 again.
#      graft-1cmd   `graft patch -p PID price --library libfix.so --to fixed_price --json` alone (loads and
#                   patches in one command); unpatch as above
#      graft-plain  the same one command with bench/libfix_plain.so: a fixed_price() that does not call the
#                   original (no trampoline), the library gdb gets
#      graft-nice   the two commands of `graft` under `nice -n -20` (a diagnostic: how much of graft's wall
#                   time is its own process waiting for a CPU behind the victim's spinning workers)
#      gdb          `gdb -q -nx -batch -p PID -x bench/inject_gdb.py`: `call (void*)dlopen(LIB, 2)`, `&fixed_price`,
#                   a 14-byte `jmp [rip+0]` written over price() (threads inside it stepped out first).
#                   gdb builds no trampoline, so it loads libfix_plain.so (libfix.so would call NULL)
#      frida        `python3 bench/inject_frida.py PID libfix.so price fixed_price`: frida.attach,
#                   Module.load, graft_original_fixed_price = price, Interceptor.replace(price, fixed_price)
#                   (frida's interceptor lets a call of price() from inside its replacement through to
#                   the original), script eternalized (the replacement stays), detach. Rows: the whole
#                   python invocation (bash's clock), and python's own clocks: `import frida`, attach →
#                   the script's `done` (sent right after the replace), everything in python until the
#                   detach returned (the rest of the wall time is the interpreter's exit).
#    The tools run in an order that rotates from run to run.
# 2. window: how long the target is stopped. graft's patch reports it (--json stop_window_ns: from just
#    before its first PTRACE_SEIZE to its last PTRACE_DETACH, every thread stopped), taken from the wall
#    runs; so does graft inject (the time its one borrowed thread was stopped; the others run). Beside
#    them, on a fresh price_service with libfix_plain.so loaded, the anchors' raw C stop-write-resume
#    `patchlat PID price fixed_price --cycles C` (ANCHORS/patchlat.c: list /proc/PID/task, SEIZE +
#    INTERRUPT all, step out of the 14 bytes, 2×POKETEXT, DETACH; cycles alternate patch and restore;
#    seize_ns → detached_ns of the patch cycles), and the same under `chrt -f 1` (graft runs its tracer
#    thread SCHED_FIFO for its window, patchlat does not).
# 3. percall: the extra cost of a call redirected through the trampoline and back to the original.
#    bench/inject_victim.c calls work() in a loop (one thread) and prints ns per call every ~100 ms;
#    phases of PHASE seconds: untouched, patched by `graft patch -p PID work --library libpass.so --to
#    pass_work` (bench/libpass.c: pass_work calls graft_original_pass_work), untouched (unpatch --all),
#    patched, untouched; then frida's Interceptor.replace(work, pass_work) (libpass.so loaded by frida,
#    graft_original_pass_work = work: frida passes the inner call to the original). The first reading
#    after each change is dropped; each reading is checked against work()'s first byte (55 untouched,
#    e9 graft).
# Modes: unpinned (no taskset: how anyone runs a tool) and pinned (the victim on CPU 1, the tool on CPU 0,
# as in bench/run.sh; in percall only the victim is pinned).
#
# Environment:
#   BENCH_RUNS=10          runs per tool and mode (wall); medians with min–max
#   BENCH_MODES="unpinned pinned"
#   BENCH_TOOLS="graft graft-1cmd graft-plain graft-nice gdb frida"
#   BENCH_SECTIONS="wall window percall"
#   BENCH_THREADS=8        price_service worker threads
#   BENCH_CYCLES=20        patchlat cycles per mode (half of them patch)
#   BENCH_PHASE=2          seconds per percall phase
#   ANCHORS=dir            the peer anchors (patchlat.c; default /work/shared/bench/anchors; copied, built)
#   GRAFT=path             graft binary (default .build/release/graft)
#   BENCH_OUT=path         report file (default bench/results/inject-<UTC date>.md; the .raw beside it)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=inject
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
RUNS=${BENCH_RUNS:-10}
MODES=${BENCH_MODES:-"unpinned pinned"}
TOOLS=${BENCH_TOOLS:-"graft graft-1cmd graft-plain graft-nice gdb frida"}
SECTIONS=${BENCH_SECTIONS:-"wall window percall"}
THREADS=${BENCH_THREADS:-8}
CYCLES=${BENCH_CYCLES:-20}
PHASE=${BENCH_PHASE:-2}
ANCHORS=${ANCHORS:-/work/shared/bench/anchors}
GRAFT=${GRAFT:-$ROOT/.build/release/graft}
CC=${CC:-cc}
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${BENCH_OUT:-$ROOT/bench/results/inject-$STAMP.md}
RAW=${OUT%.md}.raw
START_S=$SECONDS
section() { [[ " $SECTIONS " == *" $1 "* ]]; }

for tool in $TOOLS; do
    case $tool in graft|graft-1cmd|graft-plain|graft-nice|gdb|frida) ;; *) die "unknown tool in BENCH_TOOLS: $tool (graft graft-1cmd graft-plain graft-nice gdb frida)" ;; esac
done
for mode in $MODES; do
    case $mode in unpinned|pinned) ;; *) die "unknown mode in BENCH_MODES: $mode (unpinned pinned)" ;; esac
done
[[ $(id -u) == 0 ]] || die "needs root (ptrace of processes that are not its children, chrt)"
[[ -x "$GRAFT" ]] || die "no graft binary at $GRAFT: run \`make release\`, or set GRAFT=path"
"$GRAFT" inject --help > /dev/null 2>&1 || die "$GRAFT has no \`inject\` command"
has "$CC" || die "no C compiler ($CC)"
if [[ " $MODES " == *" pinned "* ]] && { ! has taskset || [[ $(nproc) -lt 2 ]]; }; then
    log "pinned mode needs taskset and 2 CPUs: skipping it"
    MODES=$(tr ' ' '\n' <<< "$MODES" | grep -vx pinned | tr '\n' ' ')
fi
declare -A SKIP=()
if want gdb && ! has gdb; then SKIP[gdb]="gdb not installed"; fi
if want frida && ! python3 -c 'import frida' 2> /dev/null; then SKIP[frida]="frida not installed for python3 (python3 -m pip install frida)"; fi

# --- build ------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/graft-inject.XXXXXX")
VICTIM_PID=""
TOOL_PID=""
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$(dirname "$OUT")"
: > "$RAW"

make -s -C "$ROOT/TestTargets" OUT="$WORK" price_service libfix.so > "$WORK/make.log" 2>&1 \
    || die "building price_service and libfix.so failed: $(tail -1 "$WORK/make.log")"
"$CC" -O2 -Wall -shared -fPIC -o "$WORK/libfix_plain.so" "$ROOT/bench/libfix_plain.c" || die "building libfix_plain.so failed"
"$CC" -O2 -Wall -shared -fPIC -I "$ROOT/include" -o "$WORK/libpass.so" "$ROOT/bench/libpass.c" || die "building libpass.so failed"
"$CC" -O2 -Wall -o "$WORK/inject_victim" "$ROOT/bench/inject_victim.c" || die "building inject_victim failed"
PATCHLAT=""
if section window; then
    if [[ -f "$ANCHORS/patchlat.c" ]]; then
        cp "$ANCHORS/patchlat.c" "$WORK/" && "$CC" -O2 -Wall -o "$WORK/patchlat" "$WORK/patchlat.c" && PATCHLAT=$WORK/patchlat
    fi
    [[ -n "$PATCHLAT" ]] || log "no $ANCHORS/patchlat.c (set ANCHORS=dir): the patchlat rows are skipped"
fi
LIBFIX=$WORK/libfix.so
PLAIN=$WORK/libfix_plain.so

# --- helpers ----------------------------------------------------------------------------------------
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RAW"; } # SECTION MODE TOOL METRIC VALUE
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
ms_since() { awk -v a="$1" -v b="$(now_us)" 'BEGIN { printf "%.3f\n", (b - a) / 1000 }'; }
json_num() { grep -o "\"$1\":[0-9]*" "$2" | head -1 | cut -d: -f2; } # KEY FILE -> first value

pins() { # MODE -> VPIN, TPIN (command prefixes)
    if [[ $1 == pinned ]]; then VPIN=(taskset -c 1); TPIN=(taskset -c 0); else VPIN=(); TPIN=(); fi
}
wait_line() { # FILE PATTERN FROM_LINE SECONDS: a line matching PATTERN after line FROM_LINE appears in time
    local deadline=$((SECONDS + $4 + 1)) i
    for ((i = 0; i < $4 * 50; i++)); do
        tail -n +"$(($3 + 1))" "$1" 2> /dev/null | grep -qE "$2" && return 0
        [[ -n "$VICTIM_PID" ]] && ! kill -0 "$VICTIM_PID" 2> /dev/null && return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.02
    done
    return 1
}
lines() { wc -l < "$1"; }
death() { # DEATH = how the victim ended (call once it is gone, not in a subshell): "killed by SIGSEGV", "exit 3"
    local rc=0
    wait "$VICTIM_PID" 2> /dev/null || rc=$?
    VICTIM_PID=""
    if ((rc > 128)); then DEATH="killed by SIG$(kill -l $((rc - 128)))"; else DEATH="exit $rc"; fi
}
victim_ok() { # FILE: alive, and no worker saw a wrong price
    kill -0 "$VICTIM_PID" 2> /dev/null && ! grep -q WRONG "$1"
}
start_price() { # MODE -> VICTIM_PID, VOUT (a fresh 8-thread price_service, printing ticks)
    pins "$1"
    VOUT=$WORK/price.out
    "${VPIN[@]}" "$WORK/price_service" "$THREADS" 600 > "$VOUT" 2>&1 &
    VICTIM_PID=$!
    wait_line "$VOUT" '^tick' 0 5 || die "price_service did not start: $(tail -1 "$VOUT")"
    sleep 0.3 # the workers are running
}
fixed_now() { wait_line "$VOUT" 'price\(150\)=1500' "$1" 3; }  # FROM_LINE
buggy_now() { wait_line "$VOUT" 'price\(150\)=-1500' "$1" 3; }
fail_line() { head -c 300 "$1" | tr '\n' ' '; }

# --- 1. wall (and graft's stop windows) -------------------------------------------------------------
graft_run() { # MODE TOOL: the graft rows of one run; returns 1 if something failed
    local mode=$1 tool=$2 t n lib=$LIBFIX ok=1 inject_ms=0 patch_ms pre=()
    [[ $tool == graft-plain ]] && lib=$PLAIN
    [[ $tool == graft-nice ]] && pre=(nice -n -20)
    n=$(lines "$VOUT")
    if [[ $tool == graft || $tool == graft-nice ]]; then
        t=$(now_us)
        if ! "${TPIN[@]}" "${pre[@]}" "$GRAFT" inject -p "$VICTIM_PID" "$lib" --json > "$WORK/inject.json" 2> "$WORK/err"; then
            log "$mode $tool: inject failed: $(fail_line "$WORK/err")"; return 1
        fi
        inject_ms=$(ms_since "$t")
        record wall "$mode" "$tool" inject_ms "$inject_ms"
        record window "$mode" "$tool" inject_window_ns "$(json_num stop_window_ns "$WORK/inject.json")"
        record window "$mode" "$tool" inject_elapsed_ns "$(json_num elapsed_ns "$WORK/inject.json")"
    fi
    t=$(now_us)
    if ! "${TPIN[@]}" "${pre[@]}" "$GRAFT" patch -p "$VICTIM_PID" price --library "$lib" --to fixed_price --json > "$WORK/patch.json" 2> "$WORK/err"; then
        log "$mode $tool: patch failed: $(fail_line "$WORK/err")"; return 1
    fi
    patch_ms=$(ms_since "$t")
    record wall "$mode" "$tool" patch_ms "$patch_ms"
    record wall "$mode" "$tool" total_ms "$(awk -v a="$inject_ms" -v b="$patch_ms" 'BEGIN { printf "%.3f\n", a + b }')"
    record window "$mode" "$tool" patch_window_ns "$(json_num stop_window_ns "$WORK/patch.json")"
    fixed_now "$n" || { log "$mode $tool: the victim does not print the fixed price after the patch: $(tail -1 "$VOUT")"; ok=0; }
    n=$(lines "$VOUT")
    t=$(now_us)
    if ! "${TPIN[@]}" "$GRAFT" unpatch -p "$VICTIM_PID" --all --json > "$WORK/unpatch.json" 2> "$WORK/err"; then
        log "$mode $tool: unpatch failed: $(fail_line "$WORK/err")"; return 1
    fi
    record wall "$mode" "$tool" unpatch_ms "$(ms_since "$t")"
    buggy_now "$n" || { log "$mode $tool: the victim still prints the fixed price after unpatch: $(tail -1 "$VOUT")"; ok=0; }
    # A worker preempted inside the library keeps it loaded ("not unloaded: thread N is running in it;
    # left loaded"); a later unpatch --all unloads it. Count how many more it took (not timed).
    local retries=0
    while ! grep -q '"outcome":"unloaded"' "$WORK/unpatch.json"; do
        if ((retries == 5)); then log "$mode $tool: the library is still loaded after 6 unpatch --all: $(fail_line "$WORK/unpatch.json")"; ok=0; break; fi
        retries=$((retries + 1))
        sleep 0.05
        "$GRAFT" unpatch -p "$VICTIM_PID" --all --json > "$WORK/unpatch.json" 2> "$WORK/err" || true
    done
    record wall "$mode" "$tool" unload_retries "$retries"
    [[ $ok == 1 ]]
}

gdb_run() { # MODE
    local mode=$1 t n
    n=$(lines "$VOUT")
    t=$(now_us)
    if ! LIB=$PLAIN FUNC=price TO=fixed_price "${TPIN[@]}" gdb -q -nx -batch -iex 'set debuginfod enabled off' \
        -p "$VICTIM_PID" -x "$ROOT/bench/inject_gdb.py" > "$WORK/gdb.out" 2>&1; then
        log "$mode gdb: failed: $(grep -v '^\[' "$WORK/gdb.out" | tail -2 | tr '\n' ' ')"; return 1
    fi
    record wall "$mode" gdb total_ms "$(ms_since "$t")"
    grep -q '^GDBINJECT' "$WORK/gdb.out" || { log "$mode gdb: no GDBINJECT line: $(tail -2 "$WORK/gdb.out" | tr '\n' ' ')"; return 1; }
    record wall "$mode" gdb stepped_out "$(grep -o 'stepped_out=[0-9]*' "$WORK/gdb.out" | cut -d= -f2)"
    fixed_now "$n" || { log "$mode gdb: the victim does not print the fixed price: $(tail -1 "$VOUT")"; return 1; }
}

frida_run() { # MODE
    local mode=$1 t n key
    n=$(lines "$VOUT")
    t=$(now_us)
    if ! "${TPIN[@]}" python3 "$ROOT/bench/inject_frida.py" "$VICTIM_PID" "$LIBFIX" price fixed_price > "$WORK/frida.out" 2> "$WORK/err"; then
        log "$mode frida: failed: $(fail_line "$WORK/err")"; return 1
    fi
    record wall "$mode" frida total_ms "$(ms_since "$t")"
    for key in import_ms attach_ms attach_to_done_ms in_python_ms; do
        record wall "$mode" frida "$key" "$(grep -o "\"$key\": [0-9.]*" "$WORK/frida.out" | awk '{ print $2 }')"
    done
    fixed_now "$n" || { log "$mode frida: the victim does not print the fixed price: $(tail -1 "$VOUT")"; return 1; }
}

wall_section() {
    local mode run i tool ok tools=() order
    for tool in $TOOLS; do [[ -z "${SKIP[$tool]:-}" ]] && tools+=("$tool"); done
    for mode in $MODES; do
        pins "$mode"
        for ((run = 0; run < RUNS; run++)); do
            order=()
            for ((i = 0; i < ${#tools[@]}; i++)); do order+=("${tools[$(((i + run) % ${#tools[@]}))]}"); done
            for tool in "${order[@]}"; do
                start_price "$mode"
                ok=1
                case $tool in
                    graft*) graft_run "$mode" "$tool" || ok=0 ;;
                    gdb) gdb_run "$mode" || ok=0 ;;
                    frida) frida_run "$mode" || ok=0 ;;
                esac
                if ! kill -0 "$VICTIM_PID" 2> /dev/null; then
                    death
                    log "$mode $tool: the victim died ($DEATH): $(tail -1 "$VOUT")"; ok=0
                    record wall "$mode" "$tool" death "$DEATH"
                elif ! victim_ok "$VOUT"; then
                    log "$mode $tool: the victim computed a wrong price: $(grep -m1 WRONG "$VOUT")"; ok=0
                fi
                record wall "$mode" "$tool" ok "$ok"
                stop_victim
            done
            log "wall $mode: run $((run + 1))/$RUNS done"
        done
    done
}

# --- 2. window: patchlat beside graft --------------------------------------------------------------
window_section() {
    local mode addr target how
    [[ -n "$PATCHLAT" ]] || return 0
    for mode in $MODES; do
        for how in plain fifo; do
            start_price "$mode"
            "$GRAFT" inject -p "$VICTIM_PID" "$PLAIN" > /dev/null 2> "$WORK/err" || die "graft inject of libfix_plain.so (for patchlat) failed: $(fail_line "$WORK/err")"
            addr=$("$GRAFT" symbols -p "$VICTIM_PID" price --json | grep -o '"address":"0x[0-9a-f]*"' | head -1 | cut -d'"' -f4)
            target=$("$GRAFT" symbols -p "$VICTIM_PID" 'libfix_plain:fixed_price' --json | grep -o '"address":"0x[0-9a-f]*"' | head -1 | cut -d'"' -f4)
            [[ -n "$addr" && -n "$target" ]] || die "could not find price / fixed_price in the victim"
            local prefix=("${TPIN[@]}")
            [[ $how == fifo ]] && prefix+=(chrt -f 1)
            if "${prefix[@]}" "$PATCHLAT" "$VICTIM_PID" "$addr" "$target" --cycles "$CYCLES" --sleep-ms 100 > "$WORK/patchlat.out" 2> "$WORK/err"; then
                awk -v m="$mode" -v t="patchlat-$how" '/^CYCLE/ && /op=patch/ {
                        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                        printf "window\t%s\t%s\tpatch_window_ns\t%.0f\n", m, t, (v["detached_ns"] - v["seize_ns"])
                        printf "window\t%s\t%s\tstopped_to_detached_ns\t%.0f\n", m, t, (v["detached_ns"] - v["stopped_ns"])
                        printf "window\t%s\t%s\tstepped_out\t%d\n", m, t, v["stepped_out"] }' "$WORK/patchlat.out" >> "$RAW"
            else
                log "$mode patchlat-$how failed: $(fail_line "$WORK/err")"
            fi
            if victim_ok "$VOUT"; then record window "$mode" "patchlat-$how" ok 1; else
                log "$mode patchlat-$how: the victim died or computed a wrong price: $(tail -1 "$VOUT")"; record window "$mode" "patchlat-$how" ok 0; fi
            stop_victim
        done
        log "window $mode done"
    done
}

# --- 3. percall ---------------------------------------------------------------------------------------
percall_phase() { # MODE NAME ENTRY: PHASE seconds of readings, the first one dropped, each checked for ENTRY
    local n0 n1
    echo "$2" >> "$WORK/phases"
    n0=$(lines "$VOUT")
    sleep "$PHASE"
    n1=$(lines "$VOUT")
    sed -n "$((n0 + 2)),${n1}p" "$VOUT" | awk -v m="$1" -v t="$2" -v e="$3" '/^ns_per_call/ {
        if (e == "any" || $6 == e) printf "percall\t%s\t%s\tns_per_call\t%s\n", m, t, $2
        else printf "percall\t%s\t%s\twrong_entry\t%s\n", m, t, $6 }' >> "$RAW"
}
percall_section() {
    local mode cycle
    for mode in $MODES; do
        pins "$mode"
        VOUT=$WORK/percall.out
        "${VPIN[@]}" "$WORK/inject_victim" 600 > "$VOUT" 2>&1 &
        VICTIM_PID=$!
        wait_line "$VOUT" '^ns_per_call' 0 5 || die "inject_victim did not start: $(tail -1 "$VOUT")"
        sleep 1
        for cycle in 1 2; do
            percall_phase "$mode" untouched 55
            "$GRAFT" patch -p "$VICTIM_PID" work --library "$WORK/libpass.so" --to pass_work > "$WORK/err" 2>&1 \
                || die "percall: graft patch failed: $(fail_line "$WORK/err")"
            percall_phase "$mode" graft e9
            "$GRAFT" unpatch -p "$VICTIM_PID" --all > "$WORK/err" 2>&1 || die "percall: graft unpatch failed: $(fail_line "$WORK/err")"
        done
        percall_phase "$mode" untouched 55
        if want frida && [[ -z "${SKIP[frida]:-}" ]]; then
            echo "frida (attaching, Module.load, Interceptor.replace)" >> "$WORK/phases"
            if python3 "$ROOT/bench/inject_frida.py" "$VICTIM_PID" "$WORK/libpass.so" work pass_work > "$WORK/frida.out" 2> "$WORK/err"; then
                percall_phase "$mode" frida any
            else
                log "percall $mode: frida failed: $(fail_line "$WORK/err")"
            fi
        fi
        if kill -0 "$VICTIM_PID" 2> /dev/null; then record percall "$mode" victim ok 1; else
            death
            log "percall $mode: the victim died ($DEATH) after $(grep -c '^ns_per_call' "$VOUT") readings"
            record percall "$mode" victim ok 0
            record percall "$mode" victim death "$DEATH, after the $(tail -1 "$WORK/phases") phase"; fi
        stop_victim
        log "percall $mode done"
    done
}

# --- run ----------------------------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_BEFORE=$(ps -eo pcpu=,comm= --sort=-pcpu | head -4 | awk '{ printf "%s%s %s%%", (NR > 1 ? ", " : ""), $2, $1 }')
log "graft $("$GRAFT" --version 2> /dev/null || echo '?'); runs=$RUNS modes: $MODES; tools: $TOOLS; sections: $SECTIONS"
section wall && wall_section
section window && window_section
section percall && percall_section
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
TOOK=$((SECONDS - START_S))

# --- report -------------------------------------------------------------------------------------------
# stats SECTION MODE TOOL METRIC [SCALE] -> "median min max n" (values divided by SCALE), or "- - - 0"
stats() {
    awk -F'\t' -v s="$1" -v m="$2" -v t="$3" -v k="$4" -v d="${5:-1}" '$1 == s && $2 == m && $3 == t && $4 == k && $5 != "" { v[n++] = $5 / d }
        END { if (n == 0) { print "- - - 0"; exit }
              for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
              med = (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
              print med, v[0], v[n - 1], n }' "$RAW"
}
count_ok() { awk -F'\t' -v s="$1" -v m="$2" -v t="$3" '$1 == s && $2 == m && $3 == t && $4 == "ok" { n++; ok += $5 } END { printf "%d/%d\n", ok, n }' "$RAW"; }
fmt_ms() { awk -v x="$1" 'BEGIN { if (x == "-") print "–"; else if (x >= 100) printf "%.0f ms\n", x; else if (x >= 10) printf "%.1f ms\n", x; else printf "%.2f ms\n", x }'; }
fmt_t() { awk -v x="$1" 'BEGIN { if (x == "-") print "–"; else if (x >= 1000) printf "%.2f ms\n", x / 1000; else if (x >= 10) printf "%.0f µs\n", x; else printf "%.1f µs\n", x }'; } # µs in
cell() { # UNIT(ms|us) "med min max n" -> "med (min–max)"
    local f=fmt_ms; [[ $1 == us ]] && f=fmt_t
    read -r med lo hi n <<< "$2"
    [[ $n == 0 ]] && { echo "–"; return; }
    echo "$($f "$med") ($($f "$lo")–$($f "$hi"))"
}
med() { read -r m _ <<< "$1"; echo "$m"; }
goal() { awk -v x="$1" -v lim="$2" -v op="$3" 'BEGIN { if (x == "-" || x == "") { print "not measured"; exit }
    if ((op == "<" && x < lim) || (op == ">=" && x >= lim) || (op == "<=" && x <= lim)) print "met"; else print "MISSED" }'; }
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.4f\n", a / b }'; }

{
    echo "#### Run of $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    echo "Machine: nproc=$(nproc), kernel $(uname -r), CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)." \
        "graft $("$GRAFT" --version 2> /dev/null || echo '?') ($GRAFT);" \
        "$(gdb --version 2> /dev/null | head -1 || echo 'no gdb'); frida $(python3 -c 'import frida; print(frida.__version__)' 2> /dev/null || echo '–')."
    echo "Victim: \`price_service $THREADS\` ($THREADS worker thread(s) busy calling price() on $(nproc) vCPUs, a main thread printing a tick every 20 ms), a fresh one per run and tool."
    echo "$RUNS runs per tool and mode, median (min–max); the tools' order rotates from run to run. Load average before/after: $LOAD_BEFORE / $LOAD_AFTER;"
    echo "busiest processes at the start: $BUSY_BEFORE. Took ${TOOK} s. Raw: \`$(basename "$RAW")\`."
    echo "Reproduce: \`bench/inject.sh\` (env BENCH_RUNS, BENCH_MODES, BENCH_TOOLS, BENCH_SECTIONS, BENCH_PHASE, ANCHORS, GRAFT; see its header)."
    if section wall; then
        for mode in $MODES; do
            echo
            echo "##### Command wall time, $mode$([[ $mode == pinned ]] && echo ' (victim on CPU 1, tool on CPU 0)')"
            echo
            echo "| tool | command(s) | wall | × graft inject+patch | runs ok |"
            echo "|---|---|---|---|---|"
            g2=$(med "$(stats wall "$mode" graft total_ms)")
            row() { # TOOL METRIC LABEL COMMAND [RATIO]
                local s; s=$(stats wall "$mode" "$1" "$2")
                [[ $(awk '{print $4}' <<< "$s") == 0 ]] && return 0
                local r="–"; [[ ${5:-} == ratio ]] && r=$(ratio "$(med "$s")" "$g2")
                echo "| $3 | $4 | $(cell ms "$s") | $r | $(count_ok wall "$mode" "$1") |"
            }
            row graft total_ms "**graft inject + patch**" '`graft inject -p PID libfix.so` + `graft patch -p PID price --library libfix.so --to fixed_price`' ratio
            row graft inject_ms "graft inject (of the above)" '`graft inject -p PID libfix.so`'
            row graft patch_ms "graft patch (of the above; library already loaded)" '`graft patch … --library libfix.so --to fixed_price`'
            row graft-1cmd total_ms "**graft patch --library** (one command)" '`graft patch -p PID price --library libfix.so --to fixed_price`' ratio
            row graft-plain total_ms "graft patch --library, no trampoline" 'the same with libfix_plain.so' ratio
            row graft-nice total_ms "graft inject + patch under \`nice -n -20\` (diagnostic)" 'the two commands above, each under `nice -n -20`' ratio
            row graft unpatch_ms "graft unpatch --all (after inject + patch; not in the sums)" '`graft unpatch -p PID --all` (revert, free the trampoline, unload)'
            row gdb total_ms "**gdb**" '`gdb -q -nx -batch -p PID -x bench/inject_gdb.py` (dlopen libfix_plain.so + 14-byte jmp)' ratio
            row frida total_ms "**frida**, whole python invocation" '`python3 bench/inject_frida.py PID libfix.so price fixed_price`' ratio
            row frida in_python_ms "frida: in python, import to detach returned" 'python clock (the rest: interpreter exit)' ratio
            row frida attach_to_done_ms "frida: attach → replace done" '`frida.attach()` → Module.load, Interceptor.replace, `done` received' ratio
            row frida attach_ms "frida: \`frida.attach()\` alone" '' ratio
            row frida import_ms "frida: \`import frida\` alone" ''
        done
        echo
        for mode in $MODES; do
            echo "$mode: $(awk -F'\t' -v m="$mode" '$1 == "wall" && $2 == m && $4 == "unload_retries" { n++; if ($5 > 0) k++ }
                END { printf "the first `unpatch --all` left the library loaded (a worker was inside it: \"left loaded\") in %d of %d graft runs; a later one unloaded it", k, n }' "$RAW");" \
                "gdb stepped a thread out of the 14 bytes in $(awk -F'\t' -v m="$mode" '$1 == "wall" && $2 == m && $3 == "gdb" && $4 == "stepped_out" && $5 > 0 { k++ } END { print k + 0 }' "$RAW") runs." \
                "Victims that died: $(awk -F'\t' -v m="$mode" '$1 == "wall" && $2 == m && $4 == "death" { printf "%s%s (%s)", (n++ ? ", " : ""), $3, $5 } END { if (!n) print "none" }' "$RAW")."
        done
        echo
        echo "Goals (issue: graft under 30 ms, and ≥ 10× faster than gdb and frida):"
        echo
        for mode in $MODES; do
            g2=$(med "$(stats wall "$mode" graft total_ms)"); g1=$(med "$(stats wall "$mode" graft-1cmd total_ms)")
            gd=$(med "$(stats wall "$mode" gdb total_ms)"); fr=$(med "$(stats wall "$mode" frida total_ms)")
            fa=$(med "$(stats wall "$mode" frida attach_to_done_ms)")
            for pair in "inject + patch:$g2" "patch --library:$g1"; do
                label=${pair%%:*}; v=${pair#*:}
                [[ $v == - ]] && continue
                echo "- $mode, $label: $(fmt_ms "$v") (< 30 ms): $(goal "$v" 30 '<');" \
                    "gdb $(ratio "$gd" "$v") ($(goal "$(ratio_of "$gd" "$v")" 10 '>='));" \
                    "frida $(ratio "$fr" "$v") whole invocation ($(goal "$(ratio_of "$fr" "$v")" 10 '>=')), $(ratio "$fa" "$v") attach → replace ($(goal "$(ratio_of "$fa" "$v")" 10 '>='))"
            done
        done
    fi
    if section wall || section window; then
        echo
        echo "##### Stop window"
        echo
        echo "| what | mode | stopped | × patchlat | n |"
        echo "|---|---|---|---|---|"
        for mode in $MODES; do
            pl=$(med "$(stats window "$mode" patchlat-plain patch_window_ns 1000)")
            wrow() { # TOOL METRIC LABEL [ratio]
                local s; s=$(stats window "$mode" "$1" "$2" 1000)
                [[ $(awk '{print $4}' <<< "$s") == 0 ]] && return 0
                local r="–"; [[ ${4:-} == ratio ]] && r=$(ratio "$(med "$s")" "$pl")
                echo "| $3 | $mode | $(cell us "$s") | $r | $(awk '{print $4}' <<< "$s") |"
            }
            wrow patchlat-plain patch_window_ns "patchlat (raw C): first SEIZE → last DETACH, 14-byte jmp" ratio
            wrow patchlat-plain stopped_to_detached_ns "patchlat: all stopped → last DETACH"
            wrow patchlat-fifo patch_window_ns "patchlat under \`chrt -f 1\`: first SEIZE → last DETACH" ratio
            wrow graft patch_window_ns "**graft patch** (libfix.so: trampoline placed, 5-byte jmp to an island)" ratio
            wrow graft-1cmd patch_window_ns "graft patch --library, one command (the patch's window)" ratio
            wrow graft-plain patch_window_ns "graft patch --library libfix_plain.so (no trampoline)" ratio
            wrow graft inject_window_ns "graft inject: its borrowed thread stopped (the others run)"
            wrow graft inject_elapsed_ns "graft inject: its own elapsed time (load included)"
        done
        echo
        echo "Goal (issue: graft's patch stop window ≤ 2× patchlat's):"
        echo
        for mode in $MODES; do
            pl=$(med "$(stats window "$mode" patchlat-plain patch_window_ns)")
            for t in graft graft-plain; do
                v=$(med "$(stats window "$mode" "$t" patch_window_ns)")
                echo "- $mode, $t: $(fmt_t "$(awk -v x="$v" 'BEGIN { print (x == "-" ? "-" : x / 1000) }')") = $(ratio "$v" "$pl") patchlat: $(goal "$(ratio_of "$v" "$pl")" 2 '<=')"
            done
        done
    fi
    if section percall; then
        echo
        echo "##### Extra cost per call through the trampoline"
        echo
        echo "| mode | untouched work() | graft: work → pass_work → original | extra per call | frida Interceptor.replace, same pass-through | extra per call | readings (untouched/graft/frida) |"
        echo "|---|---|---|---|---|---|---|"
        for mode in $MODES; do
            u=$(stats percall "$mode" untouched ns_per_call); g=$(stats percall "$mode" graft ns_per_call); f=$(stats percall "$mode" frida ns_per_call)
            ns() { read -r med lo hi n <<< "$1"; [[ $n == 0 ]] && { echo "–"; return; }; printf '%.2f ns (%.2f–%.2f)\n' "$med" "$lo" "$hi"; }
            extra() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN { if (a == "-" || b == "-") print "–"; else printf "+%.2f ns\n", a - b }'; }
            echo "| $mode | $(ns "$u") | $(ns "$g") | $(extra "$g" "$u") | $(ns "$f") | $(extra "$f" "$u") | $(awk '{print $4}' <<< "$u")/$(awk '{print $4}' <<< "$g")/$(awk '{print $4}' <<< "$f") |"
        done
        wrong=$(awk -F'\t' '$1 == "percall" && $4 == "wrong_entry"' "$RAW" | wc -l)
        dead=$(awk -F'\t' '$1 == "percall" && $4 == "ok" && $5 == 0' "$RAW" | wc -l)
        echo
        echo "Readings whose entry byte did not match their phase (dropped): $wrong. Victims that died: $dead$(awk -F'\t' '$1 == "percall" && $4 == "death" { printf "%s %s (%s)", (n++ ? "," : ":"), $2, $5 }' "$RAW")."
    fi
} > "$OUT"
cat "$OUT"
log "report: $OUT (raw: $RAW)"
