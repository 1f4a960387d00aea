#!/usr/bin/env bash
# Benchmarks (figures printed side by side with their baselines; never timed assertions):
# the archive replay (local disk and S3 in moto), the in-process cost of one command, and
# each function's cold start against a minimal lambda_runtime hello world (no moto needed).
# Usage: infra/bench.sh [replay|command|coldstart]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

which=${1:-all}
case "$which" in
    all | replay | command | coldstart) ;;
    *)
        echo "usage: infra/bench.sh [replay|command|coldstart]" >&2
        exit 2
        ;;
esac

if [ "$which" = all ] || [ "$which" = coldstart ]; then
    # One build for the baseline and the functions, so they share features and profile.
    cargo build --release --locked -p coldstart -p command-handler -p outbox-sweep \
        -p processor -p query -p hydrator --bins
    target/release/coldstart
fi
[ "$which" = coldstart ] && exit 0

source infra/moto.sh
venv="$root/.venv"
ensure_venv "$venv"
moto_start "$venv" "$root/target/moto-bench.log"
trap moto_stop EXIT INT TERM

if [ "$which" = all ] || [ "$which" = replay ]; then
    cargo bench --locked -p hydrator --bench replay
fi
if [ "$which" = all ] || [ "$which" = command ]; then
    cargo bench --locked -p command-handler --bench command
fi
