#!/usr/bin/env bash
# deploy/systemd/switchyard@.service (issue 9): `systemd-analyze verify` accepts the unit with no
# warning at all (rc 0 and empty output; unknown keys or bad values only warn), and a copy with one
# typo is caught (so the check is not blind here); the unit has its environment files, restart
# policy and hardening; its ExecStart line, with the instance name and SY_CONFIG expanded as
# systemd does, runs the named node of a real config (which, alone, times out waiting for its
# peers and names them). Installs Debian's systemd when root and systemd-analyze is missing;
# skips (77) when it cannot run in this container. Needs SY_BUILD_DIR (ctest sets it).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
unit="$root/deploy/systemd/switchyard@.service"
sy="${SY_BUILD_DIR:?SY_BUILD_DIR not set}/apps/switchyard"
[ -x "$sy" ] || { echo "SKIP: switchyard not built"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sy-systemd-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
# shellcheck source=tests/system/lib.sh
. "$root/tests/system/lib.sh"

if ! command -v systemd-analyze >/dev/null; then
  [ "$(id -u)" -eq 0 ] || { echo "SKIP: no systemd-analyze (apt-get install systemd) and not root"; exit 77; }
  timeout 120 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd \
    >"$work/apt.log" 2>&1 || { echo "SKIP: cannot install systemd: $(tail -n 1 "$work/apt.log")"; exit 77; }
fi
# Can verify run here at all? A minimal good unit must pass.
printf '[Service]\nExecStart=/bin/true\n' >"$work/probe.service"
systemd-analyze verify --man=no "$work/probe.service" >"$work/probe.log" 2>&1 ||
  { echo "SKIP: systemd-analyze verify cannot run in this container: $(tail -n 1 "$work/probe.log")"; exit 77; }

# The unit as installed, but with this build's binary (verify checks that ExecStart exists).
mkdir -p "$work/units"
sed "s|/usr/local/bin/switchyard|$sy|" "$unit" >"$work/units/switchyard@.service"
cp "$work/units/switchyard@.service" "$work/units/switchyard@router.service"
out=$(systemd-analyze verify --man=no "$work/units/switchyard@router.service" 2>&1) && rc=0 || rc=$?
[ "$rc" -eq 0 ] && [ -z "$out" ] || fail "systemd-analyze verify: rc $rc: $out"
echo "systemd-analyze verify switchyard@router.service: rc 0, no warnings"

# A blind check would pass anything: one misspelt key must be reported.
sed 's/^ProtectSystem=/ProtectSytem=/' "$work/units/switchyard@.service" >"$work/units/switchyard@typo.service"
out=$(systemd-analyze verify --man=no "$work/units/switchyard@typo.service" 2>&1 || true)
grep -q "Unknown key 'ProtectSytem'" <<<"$out" || fail "verify did not report a misspelt key: $out"
echo "a misspelt key is reported: $(head -n 1 <<<"$out" | sed 's|.*/||')"

for line in "EnvironmentFile=-/etc/switchyard/switchyard.env" "EnvironmentFile=-/etc/switchyard/%i.env" \
            "Restart=on-failure" "NoNewPrivileges=yes" "ProtectSystem=strict" "DynamicUser=yes" \
            "CapabilityBoundingSet=" "KillSignal=SIGTERM"; do
  grep -qx "$line" "$unit" || fail "the unit has no '$line'"
done
echo "environment files, restart policy, hardening present"

# ExecStart as systemd runs it for instance "router": %i and ${SY_CONFIG} expanded.
model=$(tiny_model)
[ -n "$model" ] || { echo "systemd unit test passed (no tiny model: the ExecStart run was skipped)"; exit 0; }
cat >"$work/cluster.toml" <<EOF
[cluster]
peer_timeout_s = 1
[model]
path = "$model"
[api]
rpc = "127.0.0.1:$((30000 + RANDOM % 10000))"
http = "127.0.0.1:$((40000 + RANDOM % 10000))"
[[node]]
name = "router"
transport_port = $((20000 + RANDOM % 10000))
metrics_port = $((50000 + RANDOM % 10000))
roles = ["router"]
[[node]]
name = "prefill0"
transport_port = 1
metrics_port = 2
roles = ["prefill", "decode"]
EOF
exec_start=$(sed -n 's/^ExecStart=//p' "$work/units/switchyard@.service")
exec_start=${exec_start//%i/router}
exec_start=${exec_start//'${SY_CONFIG}'/$work/cluster.toml}
rc=0
# shellcheck disable=SC2086  # word splitting as systemd does
timeout 30 $exec_start >"$work/node.out" 2>"$work/node.err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "node router: timed out after 1 s waiting for peer prefill0" "$work/node.err" ||
  fail "ExecStart for switchyard@router: rc $rc: $(tail -n 3 "$work/node.err")"
echo "ExecStart ran node router: $(grep -m1 'timed out' "$work/node.err" | cut -c1-120)"
echo "systemd unit test passed"
