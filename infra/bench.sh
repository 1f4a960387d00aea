#!/usr/bin/env bash
# Benchmarks (figures printed side by side with their baselines; never timed assertions):
# the archive replay (local disk and S3 in moto) and the in-process cost of one command.
# Usage: infra/bench.sh [replay|command]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
source infra/moto.sh
venv="$root/.venv"
ensure_venv "$venv"
moto_start "$venv" "$root/target/moto-bench.log"
trap moto_stop EXIT INT TERM

which=${1:-all}
if [ "$which" = all ] || [ "$which" = replay ]; then
    cargo bench --locked -p hydrator --bench replay
fi
if [ "$which" = all ] || [ "$which" = command ]; then
    cargo bench --locked -p command-handler --bench command
fi
