#!/usr/bin/env bash
# The test command: installs what the tests need (a virtualenv with a pinned moto server),
# starts moto on 127.0.0.1, runs formatting, lint and every test against it, and stops
# what it started. Usage: infra/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

source infra/moto.sh
venv="$root/.venv"
ensure_venv "$venv"

moto_start "$venv" "$root/target/moto.log"
trap moto_stop EXIT INT TERM

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test (moto at $AWS_ENDPOINT_URL)"
cargo test --workspace --locked "$@"
