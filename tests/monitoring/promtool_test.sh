#!/usr/bin/env bash
# The Prometheus files of monitoring/prometheus/ are valid and name only metrics that exist:
#  1. promtool check rules alerts.yml; promtool check config prometheus.example.yml;
#  2. promtool check config on the scrape config `switchyard local --write-config` writes;
#  3. every switchyard_* name in alerts.yml (less _bucket/_sum/_count) is in the metric table
#     (printed by sy_metrics_list).
# Skips (77) without promtool. Needs SY_SOURCE_DIR and SY_BUILD_DIR (ctest sets them).
set -euo pipefail
src="${SY_SOURCE_DIR:?SY_SOURCE_DIR not set}"
build="${SY_BUILD_DIR:?SY_BUILD_DIR not set}"
command -v promtool >/dev/null || { echo "skip: promtool is not installed"; exit 77; }
rules="$src/monitoring/prometheus/alerts.yml"
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-promtool-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

promtool check rules "$rules" || fail "promtool check rules $rules"
# The example config names alerts.yml relative to itself: check it in place.
promtool check config "$src/monitoring/prometheus/prometheus.example.yml" || fail "example config"

bin="$build/apps/switchyard"
if [ -x "$bin" ]; then
  "$bin" local --prefill 1 --decode 1 --write-config "$work/cluster.toml" >"$work/write.out" \
    || fail "switchyard local --write-config: $(cat "$work/write.out")"
  grep -q "wrote prometheus scrape config $work/prometheus.yml" "$work/write.out" \
    || fail "local did not say where the scrape config went: $(cat "$work/write.out")"
  promtool check config "$work/prometheus.yml" || fail "generated config $work/prometheus.yml"
  targets=$(grep -c "targets: \['127.0.0.1:[0-9]*'\]" "$work/prometheus.yml")
  [ "$targets" -eq 3 ] || fail "expected 3 targets in the generated config, got $targets"
else
  echo "note: $bin is not built; generated scrape config not checked"
fi

"$build/tests/sy_metrics_list" >"$work/table.txt" || fail "sy_metrics_list"
known=$(cut -d' ' -f1 "$work/table.txt" | sort -u)
used=$(grep -v '^\s*#' "$rules" | grep -oE 'switchyard_[a-z_]+' | sed -E 's/_(bucket|sum|count)$//' | sort -u)
[ -n "$used" ] || fail "no switchyard_ metric found in $rules"
missing=$(comm -23 <(echo "$used") <(echo "$known"))
[ -z "$missing" ] || fail "alerts.yml names metrics that are not in the table: $missing"
echo "ok: rules and configs valid; $(echo "$used" | wc -l) metric names in alerts.yml, all in the table of $(echo "$known" | wc -l)"
