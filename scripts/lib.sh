# Shared helpers of scripts/demo and scripts/test.

step() { printf '\n==> %s\n' "$*"; }

# The Rust toolchain is the one thing a machine must already have.
ensure_rust_tools() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
  fi
  for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
      step "installing $component"
      rustup component add "$component"
    fi
  done
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
