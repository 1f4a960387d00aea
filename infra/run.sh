#!/usr/bin/env bash
# The main job on one machine: serves the API on http://127.0.0.1:3000 through the real
# handler code (with the processor, the archive pump and the outbox sweep running
# alongside), plays a short guided demo against it, and keeps serving with curl examples.
# Ctrl-C stops it; the data stays in .local/data (delete it to start over).
#
# Usage: infra/run.sh [--moto] [serve options: --port N, --data-dir DIR, ...]
#   default  the embedded backend (SQLite + a directory): no emulator, no Docker, no account
#   --moto   the AWS adapters against a moto server on 127.0.0.1, started from a virtualenv
#            this script makes (the stream, tables and bucket are created first)
# With AWS_ENDPOINT_URL already set (LocalStack, say), the runner uses that endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

moto=false
if [ "${1:-}" = --moto ]; then
    moto=true
    shift
fi

cargo build --quiet --locked -p timeline-local

if $moto; then
    source infra/moto.sh
    venv="$root/.venv"
    ensure_venv "$venv"
    moto_start "$venv" "$root/target/moto-run.log"
    trap moto_stop EXIT
fi

# Serves the API, plays the guided demo against it over HTTP, then keeps serving. The runner
# runs in the background so a TERM to this script also reaches it (Ctrl-C reaches both).
target/debug/timeline-local serve --demo "$@" &
app=$!
trap 'kill -TERM "$app" 2>/dev/null; wait "$app"; if $moto; then moto_stop; fi' INT TERM
wait "$app"
