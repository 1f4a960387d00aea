#!/usr/bin/env bash
# Benchmarks (figures printed side by side with their baselines; never timed assertions):
# each function's cold start against a minimal lambda_runtime hello world, sustained commands
# per second through the local runner on its embedded backend (neither needs moto), the
# in-process cost of one command, the processor's records per second per shard against
# read models with a DynamoDB round trip's latency, and the archive replay (local disk and
# S3 in moto).
# Usage: infra/bench.sh [coldstart|sustained|processor|command|replay]   (default: all five)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

which=${1:-all}
case "$which" in
    all | replay | command | coldstart | sustained | processor | stores) ;;
    *)
        echo "usage: infra/bench.sh [coldstart|sustained|processor|stores|command|replay]" >&2
        exit 2
        ;;
esac

if [ "$which" = all ] || [ "$which" = coldstart ]; then
    # One build for the baseline and the functions, so they share features and profile.
    cargo build --release --locked -p coldstart -p command-handler -p outbox-sweep \
        -p processor -p query -p hydrator --bins
    target/release/coldstart
fi
if [ "$which" = all ] || [ "$which" = sustained ]; then
    (unset AWS_ENDPOINT_URL; cargo bench --locked -p timeline-local --bench sustained)
fi
if [ "$which" = all ] || [ "$which" = processor ]; then
    cargo bench --locked -p processor --bench throughput
    cargo bench --locked -p processor --bench in_process
fi
case "$which" in coldstart | sustained | processor) exit 0 ;; esac

source infra/moto.sh
venv="$root/.venv"
ensure_venv "$venv"
moto_start "$venv" "$root/target/moto-bench.log"
trap moto_stop EXIT INT TERM

if [ "$which" = all ] || [ "$which" = stores ]; then
    # The processor into SQLite, PostgreSQL (started from .venv) and DynamoDB on moto.
    cargo bench --locked -p processor --bench stores
fi
if [ "$which" = all ] || [ "$which" = replay ]; then
    cargo bench --locked -p hydrator --bench replay
fi
if [ "$which" = all ] || [ "$which" = command ]; then
    cargo bench --locked -p command-handler --bench command
fi
