#!/usr/bin/env bash
# `make release-check`: the release binary works on a host without Swift. It runs in a private mount
# namespace (unshare --mount; in a user namespace of its own when not root) where the Swift
# toolchain's folder is an empty tmpfs and the shared libunwind, liblzma, capstone, libyaml, libstdc++,
# libgcc_s, libdw, libelf, zlib and bzip2 libraries read as empty files; there it must print its version, list a process's symbols,
# patch a running victim (and see the change), export and re-apply it (libyaml), hook it with a backtrace and with a typed
# return value (DWARF), and revert the patch. Its
# NEEDED entries must be glibc's alone.
#   GRAFT=path   the binary to check (default .build/release/graft)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GRAFT=${GRAFT:-$ROOT/.build/release/graft}
VICTIM=$ROOT/.build/victims/c_loop
die() { echo "release-check: $*" >&2; exit 1; }

if [[ ${1:-} != --inside ]]; then
    [[ -x $GRAFT ]] || die "no graft binary at $GRAFT: run \`make release\`"
    [[ -x $VICTIM ]] || die "no victim at $VICTIM: run \`make victims\`"
    # A private mount namespace: as root, or else in a user namespace of our own (where this user is root).
    if [[ $(id -u) == 0 ]]; then ns=(--mount); else ns=(--user --map-root-user --mount); fi
    # Only glibc: libc, libm, libpthread, libdl, librt, ld-linux.
    needed=$(readelf -d "$GRAFT" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    echo "NEEDED: $(echo $needed)"
    others=$(grep -Ev '^(libc|libm|libpthread|libdl|librt)\.so\.[0-9]+$|^ld-linux-x86-64\.so\.2$' <<< "$needed" || true)
    [[ -z $others ]] || die "$GRAFT needs more than glibc: $(echo $others)"
    swift=$(command -v swift) || die "swift is not on PATH: cannot tell which toolchain to hide"
    toolchain=$(dirname "$(dirname "$(readlink -f "$swift")")")  # …/usr of …/usr/bin/swift
    # A toolchain installed in /usr itself: hide its runtime libraries (/usr/lib/swift).
    [[ $toolchain != /usr ]] || toolchain=/usr/lib/swift
    exec unshare "${ns[@]}" --propagation private -- "$0" --inside "$toolchain"
fi

# Inside the namespace.
toolchain=$2
mount -t tmpfs -o size=1m,mode=0755 graft-release-check "$toolchain"
hidden=0
for lib in /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu; do
    for so in "$lib"/libunwind*.so* "$lib"/liblzma.so* "$lib"/libcapstone.so* "$lib"/libyaml*.so* "$lib"/libstdc++.so* "$lib"/libgcc_s.so* \
              "$lib"/libdw.so* "$lib"/libdw-*.so "$lib"/libelf.so* "$lib"/libelf-*.so "$lib"/libz.so* "$lib"/libbz2.so*; do
        [[ -f $so && ! -L $so ]] || continue
        mount --bind /dev/null "$so"
        hidden=$((hidden + 1))
    done
done
unset LD_LIBRARY_PATH LD_PRELOAD
echo "hidden: $toolchain (empty tmpfs; $(ls -A "$toolchain" | wc -l) entries) and $hidden shared libraries"
if command -v swift >/dev/null 2>&1 && swift --version >/dev/null 2>&1; then die "the toolchain still runs: not hidden"; fi
# The debug build links the toolchain's libraries: here it must not start.
if [[ -x $ROOT/.build/debug/graft ]] && "$ROOT/.build/debug/graft" --version >/dev/null 2>&1; then
    die "the debug build still starts: the toolchain's libraries are not hidden"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/graft-release-check.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do { kill -9 "$p"; wait "$p"; } 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
graft() { "$GRAFT" "$@" --state-dir "$WORK/state"; }
# Polls for an event (a line the victim prints), failing after 30 s.
wait_for() { # description, command…
    local what=$1; shift
    for _ in $(seq 600); do "$@" && return 0; sleep 0.05; done
    die "timed out waiting for $what"
}

version=$("$GRAFT" --version) || die "graft --version failed"
echo "graft --version: $version"

sleep 300 & pids+=($!)
syms=$(graft symbols -p "${pids[0]}" 'libc:*nanosleep') || die "graft symbols failed"
grep -q nanosleep <<< "$syms" || die "graft symbols found no nanosleep in sleep(1): $syms"
echo "graft symbols -p <sleep>: $(wc -l <<< "$syms") lines"

"$VICTIM" 20 120 > "$WORK/victim.out" & pids+=($!)
victim=${pids[1]}
wait_for "c_loop's ready line" grep -qx ready "$WORK/victim.out"
graft patch -p "$victim" value_a --to value_b
wait_for "a=2 from the patched victim" grep -qx a=2 "$WORK/victim.out"
# A patch file round trip (libyaml, linked in): export, then apply finds it applied already.
graft export -p "$victim" > "$WORK/fix.yaml" || die "graft export failed"
applied=$(graft apply -p "$victim" "$WORK/fix.yaml") || die "graft apply failed: $applied"
grep -q 'nothing to do' <<< "$applied" || die "graft apply did not find the patch applied: $applied"
graft hook -p "$victim" value_b --backtrace --count 1 > "$WORK/hook.out" || die "graft hook failed: $(cat "$WORK/hook.out")"
grep -q 'c_loop!main' "$WORK/hook.out" || die "no backtrace through main in: $(cat "$WORK/hook.out")"
cat "$WORK/hook.out"
# Typed results from c_loop's DWARF (libdw, linked statically): `int value_b(void)` returns 2.
graft hook -p "$victim" value_b --returns --count 1 > "$WORK/typed.out" || die "graft hook --returns failed: $(cat "$WORK/typed.out")"
grep -Eq 'value_b(\([^)]*\) = | returned )2 in ' "$WORK/typed.out" || die "no typed return value (DWARF) in: $(cat "$WORK/typed.out")"
grep -E 'value_b(\([^)]*\) = | returned )' "$WORK/typed.out"
graft unpatch -p "$victim" --all
last_is_a1() { [[ $(tail -n 1 "$WORK/victim.out") == a=1 ]]; }
wait_for "a=1 after the revert" last_is_a1
# A program file (graft patch --file): x86_64, run here; Thumb-2 (capstone's ARM modes in the static
# archive), checked by its disassembly.
"$GRAFT" patch --file "$ROOT/.build/victims/file_price_x86_64" price --to cheap -o "$WORK/price" > /dev/null
[[ $("$WORK/price") == "price 7" ]] || die "the file patch of file_price_x86_64 does not print price 7"
if [[ -f $ROOT/.build/victims/file_price_thumb ]]; then
    "$GRAFT" patch --file "$ROOT/.build/victims/file_price_thumb" thumb_even --to cheap -o "$WORK/thumb" | grep -q 'ldr.w pc, \[pc, #0\]' \
        || die "the Thumb file patch does not show ldr.w pc, [pc, #0]"
fi
echo "release-check: ok ($GRAFT runs without the toolchain: version, symbols, patch, export/apply, hook --backtrace, typed hook --returns, unpatch, patch --file)"
