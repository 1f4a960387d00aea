#!/usr/bin/env bash
# The main job on one machine: starts a moto server on 127.0.0.1 (from a virtualenv this
# script makes), creates the stream and tables, and serves the API on http://127.0.0.1:3000
# through the real handler code. Ctrl-C stops both. Usage: infra/run.sh [--port N]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

source infra/moto.sh
venv="$root/.venv"
ensure_venv "$venv"
cargo build --quiet --locked -p timeline-local

moto_start "$venv" "$root/target/moto-run.log"
trap moto_stop EXIT INT TERM

cat <<'TXT'
Try it (in another terminal):
  curl -s -XPOST localhost:3000/rides -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \
    -d '{"id":"ride-1","rider_id":"rider-42","pickup":{"address":"1 Main St","lat":52.52,"lon":13.40},"dropoff":{"address":"9 Oak Ave","lat":52.50,"lon":13.45},"fare_estimate_cents":9000}'
  curl -s -XPOST localhost:3000/rides/ride-1/assign-driver -H 'Content-Type: application/json' -H 'If-Match: "1"' -d '{"driver_id":"driver-7"}'
  curl -s -XPOST localhost:3000/rides/ride-1/start -H 'Content-Type: application/json' -d '{}'
TXT
target/debug/timeline-local "$@"
