#!/usr/bin/env bash
# The main job on one machine: starts a moto server on 127.0.0.1 (from a virtualenv this
# script makes), creates the stream, tables and bucket, serves the API on
# http://127.0.0.1:3000 through the real handler code (with the processor, the archive pump
# and the outbox sweep running alongside), plays a short guided demo against it, and keeps
# serving with curl examples. Ctrl-C stops everything. Usage: infra/run.sh [--port N]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

source infra/moto.sh
venv="$root/.venv"
ensure_venv "$venv"
cargo build --quiet --locked -p timeline-local

moto_start "$venv" "$root/target/moto-run.log"
trap moto_stop EXIT

# Serves the API, plays the guided demo against it over HTTP, then keeps serving. The runner
# runs in the background so a TERM to this script also reaches it (Ctrl-C reaches both).
target/debug/timeline-local serve --demo "$@" &
app=$!
trap 'kill -TERM "$app" 2>/dev/null; wait "$app"; moto_stop' INT TERM
wait "$app"
