# Shared helpers of scripts/demo and scripts/test: install what is missing,
# skip what is there.

step() { printf '\n==> %s\n' "$*"; }

TANSU_VERSION=0.6.0

# The Rust toolchain is the one thing a machine must already have.
ensure_rust_tools() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
  fi
  if ! cargo fmt --version >/dev/null 2>&1; then
    step "installing rustfmt"
    rustup component add rustfmt
  fi
  if ! cargo clippy --version >/dev/null 2>&1; then
    step "installing clippy"
    rustup component add clippy
  fi
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
}

apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  step "installing $* (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Redis: the hot state. redis-benchmark comes with redis-tools.
ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server redis-tools
  fi
}

# curl shows the read API in the demo; wrk drives the API benchmark.
ensure_http_tools() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# Headless Chromium drives the gateway's web viewer in the end-to-end test.
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium
  fi
}

# The load harness's report draws its plots' text with DejaVu Sans.
ensure_fonts() {
  if [ -z "${LOADTEST_FONT:-}" ] && [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    apt_install fonts-dejavu-core
  fi
}

# Build tools for the librdkafka bundled by the rdkafka crate.
ensure_build_tools() {
  local missing=()
  command -v make >/dev/null 2>&1 || missing+=(make)
  command -v cc >/dev/null 2>&1 || missing+=(gcc)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  [ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# tansu: a Kafka-protocol broker, pinned.
ensure_tansu() {
  if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  step "installing tansu $TANSU_VERSION (cargo install, a few minutes once)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
}

# The shared Cricsheet matches live beside the project (or in CRICSHEET_DIR).
ensure_cricsheet_data() {
  if [ -z "${CRICSHEET_DIR:-}" ]; then
    CRICSHEET_DIR="$(cd .. && pwd)/shared/data/cricsheet/ipl"
  elif [ -d "$CRICSHEET_DIR/ipl" ]; then
    CRICSHEET_DIR="$CRICSHEET_DIR/ipl"
  fi
  if ! ls "$CRICSHEET_DIR"/*.json >/dev/null 2>&1; then
    echo "no Cricsheet matches in $CRICSHEET_DIR: set CRICSHEET_DIR to a folder of Cricsheet JSON files" >&2
    exit 1
  fi
  export CRICSHEET_DIR
}

# Is something listening on 127.0.0.1:PORT?
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 150); do
    port_open "$port" && return 0
    sleep 0.2
  done
  echo "$what did not start on port $port" >&2
  return 1
}

# Reads `ingest score` JSON on stdin, prints the top N players as a table.
top_players() {
  python3 -c '
import json, sys
limit = int(sys.argv[1])
scored = json.load(sys.stdin)
ranked = sorted(scored["players"].items(), key=lambda item: (-item[1], item[0]))
for rank, (name, points) in enumerate(ranked[:limit], 1):
    print(f"{rank:>3}. {name:<24} {points:>5}")
' "$1"
}
