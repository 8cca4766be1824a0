#!/usr/bin/env bash
# Medians of `cargo bench -p bench-harness --bench groups` from criterion's estimates, and
# the ratios the benches are for: b ÷ a (a JSON field against the value column) and, per
# query over 4 rings, `all 4` ÷ the sum of the four `partition p` medians (and the median of
# `merge and finish` alone).
#
# Usage: scripts/criterion-groups.sh [criterion directory]
# (default: $CARGO_TARGET_DIR/criterion, else target/criterion).
set -euo pipefail
dir=${1:-${CARGO_TARGET_DIR:-target}/criterion}
command -v jq >/dev/null || { echo "jq is needed" >&2; exit 1; }

# The median (ns) of a bench, by its directory under $dir.
median() { jq '.median.point_estimate' "$dir/$1/new/estimates.json"; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e6 }'; }

printf '%-52s %10s\n' "groups_1m (1M events, one ring)" "median ms"
for d in "$dir"/groups_1m/*/; do
    b=$(basename "$d")
    [ "$b" = report ] && continue
    printf '%-52s %10s\n' "$(jq -r .title "$d/new/benchmark.json" 2>/dev/null || echo "$b")" \
        "$(ms "$(median "groups_1m/$b")")"
done
a=$(median "groups_1m/a value sum")
b=$(median "groups_1m/b data.amount sum")
awk -v a="$a" -v b="$b" 'BEGIN { printf "b / a (data.amount sum / value sum): %.1f\n\n", b / a }'

printf '%-32s %9s %16s %8s %18s\n' "groups_4p (1M events, 4 rings)" "all 4 ms" "sum of parts ms" "ratio" "merge+finish ms"
for q in "$dir"/groups_4p/*/; do
    name=$(basename "$q")
    [ "$name" = report ] && continue
    all=$(median "groups_4p/$name/all 4")
    parts=0
    for p in 0 1 2 3; do
        parts=$(awk -v s="$parts" -v x="$(median "groups_4p/$name/partition $p")" 'BEGIN { print s + x }')
    done
    printf '%-32s %9s %16s %8s %18s\n' "$name" "$(ms "$all")" "$(ms "$parts")" \
        "$(awk -v a="$all" -v p="$parts" 'BEGIN { printf "%.3f", a / p }')" \
        "$(awk -v x="$(median "groups_4p/$name/merge and finish")" 'BEGIN { printf "%.3f", x / 1e6 }')"
done
