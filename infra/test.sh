#!/usr/bin/env bash
# The test command: installs what the tests need (a virtualenv with a pinned moto server),
# starts moto on 127.0.0.1, runs formatting, lint and every test against it, and stops
# what it started. Usage: infra/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

venv="$root/.venv"
if ! "$venv/bin/python" -c 'import moto, flask' 2>/dev/null; then
    echo "==> creating $venv with moto[server] (pinned)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r infra/requirements.txt -c infra/constraints.txt
fi

source infra/moto.sh
moto_start "$venv" "$root/target/moto.log"
trap moto_stop EXIT

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test (moto at $AWS_ENDPOINT_URL)"
cargo test --workspace --locked "$@"
