#!/usr/bin/env bash
# graft benchmark, typed hook arguments (issue 14): `bench/typed_args.sh`. What reading types costs
# per hit. bench/typed_victim.c (one thread calling `int price(const char *item, int qty)`, built -g)
# is hooked D seconds by each mode, R times; the median hits per second and µs per hit are printed
# as a Markdown table, with each mode's ratio to `raw-args`:
#   quiet      graft hook -p PID price --duration D --json --quiet   (pc-only fast path: a count)
#   no-args    graft hook -p PID price --duration D                  (one text line per hit, `(…)`)
#   raw-args   ... --args 2 --raw       (registers in hex: the mode before types existed)
#   typed      ... --args 2             (DWARF: item="apple pie with cream", qty=3; one string read)
#   typed-ret  ... --args 2 --returns   (and the typed result at a return breakpoint)
# Text lines go to a file. Environment: BENCH_SECONDS=3 (D), BENCH_RUNS=3 (R),
# BENCH_MODES="quiet no-args raw-args typed typed-ret", GRAFT=path (default .build/release/graft),
# BENCH_CPU: pin victim and graft to this CPU (default: unpinned).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
D=${BENCH_SECONDS:-3}
R=${BENCH_RUNS:-3}
MODES=${BENCH_MODES:-"quiet no-args raw-args typed typed-ret"}
GRAFT=${GRAFT:-$ROOT/.build/release/graft}
CC=${CC:-cc}
[[ -x $GRAFT ]] || { echo "typed_args.sh: no graft at $GRAFT (make release, or GRAFT=path)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/graft-typed-bench.XXXXXX")
victim_pid=
cleanup() { [[ -n $victim_pid ]] && { kill -9 "$victim_pid" 2>/dev/null; wait "$victim_pid" 2>/dev/null; } ; rm -rf "$WORK"; }
trap cleanup EXIT
"$CC" -O2 -g -Wall -o "$WORK/typed_victim" "$ROOT/bench/typed_victim.c"
pin=()
[[ -n ${BENCH_CPU:-} ]] && pin=(taskset -c "$BENCH_CPU")

run_mode() { # mode -> hits per second
    local mode=$1 options=()
    case $mode in
        quiet) options=(--json --quiet) ;;
        no-args) options=() ;;
        raw-args) options=(--args 2 --raw) ;;
        typed) options=(--args 2) ;;
        typed-ret) options=(--args 2 --returns) ;;
        *) echo "unknown mode $mode" >&2; exit 1 ;;
    esac
    "${pin[@]}" "$WORK/typed_victim" 120 > "$WORK/victim.out" &
    victim_pid=$!
    for _ in $(seq 100); do grep -q ready "$WORK/victim.out" 2>/dev/null && break; sleep 0.05; done
    "${pin[@]}" "$GRAFT" hook -p "$victim_pid" price --duration "$D" "${options[@]}" --state-dir "$WORK/state" > "$WORK/hook.out" 2>/dev/null
    kill -TERM "$victim_pid"; wait "$victim_pid" 2>/dev/null || true; victim_pid=
    local hits
    if [[ $mode == quiet ]]; then
        hits=$(tail -n 1 "$WORK/hook.out" | sed -n 's/.*"total_hits":\([0-9]*\).*/\1/p')
    else
        hits=$(sed -n 's/^\([0-9]*\) calls\{0,1\} in .*/\1/p' "$WORK/hook.out" | tail -n 1)
    fi
    [[ $mode != typed* ]] || grep -q 'price(item="apple pie with cream", qty=' "$WORK/hook.out" || { echo "typed_args.sh: $mode printed no typed line" >&2; exit 1; }
    [[ $mode != raw-args ]] || grep -q 'price(0x' "$WORK/hook.out" || { echo "typed_args.sh: raw-args printed no raw line" >&2; exit 1; }
    awk -v h="${hits:-0}" -v d="$D" 'BEGIN { printf "%.0f\n", h / d }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

declare -A rate
for mode in $MODES; do
    rate[$mode]=$(for _ in $(seq "$R"); do run_mode "$mode"; done | median)
done
echo "graft hook on typed_victim (price(const char *, int)), ${D} s × ${R} runs, median; $(nproc) CPUs${BENCH_CPU:+, pinned to CPU $BENCH_CPU}"
echo
echo "| mode | hits/s | µs per hit | vs raw-args |"
echo "|---|---:|---:|---:|"
for mode in $MODES; do
    r=${rate[$mode]}
    base=${rate[raw-args]:-}
    awk -v m="$mode" -v r="$r" -v b="$base" 'BEGIN {
        us = r > 0 ? 1e6 / r : 0
        ratio = (b != "" && r > 0) ? sprintf("%.2f× the time", b / r) : "-"
        printf "| %s | %d | %.1f | %s |\n", m, r, us, ratio }'
done
