# Shared by bench/hooks.sh and bench/trace.sh (sourced): logging, tool selection, stopping the victim
# and the tool under test, and the number formats of the reports. The sourcing script sets
# BENCH_NAME (log prefix) and TOOLS before using want(), and WORK, VICTIM_PID, TOOL_PID before
# `trap cleanup EXIT`.

log() { echo "$BENCH_NAME: $*" >&2; }
die() { log "$*"; exit 1; }
has() { command -v "$1" >/dev/null 2>&1; }
want() { [[ " $TOOLS " == *" $1 "* ]]; }

stop_process() { # PID TRIES PAUSE: SIGTERM (the C tools, gdb and graft restore the code on it), up to
    # TRIES × PAUSE s to go, then SIGKILL; reaped either way
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq "$2"); do kill -0 "$pid" 2>/dev/null || break; sleep "$3"; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
stop_tool() { [[ -n "${TOOL_PID:-}" ]] || return 0; stop_process "$TOOL_PID" 30 0.1; TOOL_PID=""; }

# The "+poller" modes: background activity like a shell in the same session that polls a file ten times
# a second (`grep` + `sleep 0.1`), the load under which issue 11 §4 saw unpinned hooks slow down 2.5×.
# It greps FILE for PATTERN, as a script waiting for a tool's last line would: given the tool's output
# file, each grep reads all of it (a per-hit text or JSON output grows by MBs a second).
# Bounded: it ends by itself after POLLER_MAX_S seconds (default 3600) or once this script is gone,
# and stop_poller / cleanup kill it.
POLLER_PID=""
start_poller() { # FILE PATTERN
    stop_poller
    local file=$1 pattern=$2 parent=$$ max=$((${POLLER_MAX_S:-3600} * 10))
    (
        for ((i = 0; i < max; i++)); do
            kill -0 "$parent" 2>/dev/null || exit 0
            grep -qE "$pattern" "$file" 2>/dev/null || true
            sleep 0.1
        done
    ) < /dev/null > /dev/null 2>&1 &
    POLLER_PID=$!
}
stop_poller() { [[ -n "${POLLER_PID:-}" ]] || return 0; kill -KILL "$POLLER_PID" 2>/dev/null || true; wait "$POLLER_PID" 2>/dev/null || true; POLLER_PID=""; }
# mode_parts MODE -> sets PLACEMENT (pinned|unpinned) and POLLER (on|off): "unpinned+poller" -> unpinned on
mode_parts() {
    PLACEMENT=${1%+poller}
    if [[ $1 == *+poller ]]; then POLLER=on; else POLLER=off; fi
}
stop_victim() { [[ -n "${VICTIM_PID:-}" ]] || return 0; stop_process "$VICTIM_PID" 20 0.05; VICTIM_PID=""; }
cleanup() {
    stop_poller
    stop_tool
    stop_victim
    [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
}

fmt_rate() {
    awk -v x="$1" 'BEGIN { if (x == "-") { print "–"; exit }
        if (x >= 1e6) printf "%.2f M/s\n", x / 1e6; else if (x >= 1e3) printf "%.1f k/s\n", x / 1e3; else printf "%.0f /s\n", x }'
}
fmt_short() { awk -v x="$1" 'BEGIN { if (x == "-") print "–"; else if (x >= 1e6) printf "%.2fM\n", x / 1e6; else if (x >= 1e3) printf "%.1fk\n", x / 1e3; else printf "%.0f\n", x }'; }
fmt_us() { awk -v x="$1" 'BEGIN { if (x == "-" || x == 0) { print "–"; exit } if (x >= 100) printf "%.0f µs\n", x; else if (x >= 1) printf "%.1f µs\n", x; else printf "%.3f µs\n", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "–"; else if (a / b >= 10) printf "%.0f×\n", a / b; else printf "%.2f×\n", a / b }'; }
