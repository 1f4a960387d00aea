# Starts and stops a moto server on a free loopback port; sourced by the scripts here.
# moto_start VENV LOGFILE exports AWS_ENDPOINT_URL and dummy credentials for the SDK.

# ensure_venv VENV makes the virtualenv with the pinned tools of infra/requirements.txt
# (moto server, cfn-lint, SAM CLI, pytest, cargo-lambda), and brings it up to date whenever
# requirements.txt or constraints.txt change (a stamp in the venv records what it holds).
ensure_venv() {
    local venv=$1
    local want have
    want=$(cat infra/requirements.txt infra/constraints.txt | sha256sum | cut -d' ' -f1)
    have=$(cat "$venv/.timeline-requirements" 2>/dev/null || true)
    if [ "$want" != "$have" ] || ! "$venv/bin/python" -c 'import moto, flask' 2>/dev/null; then
        echo "==> installing the pinned tools into $venv (infra/requirements.txt)"
        [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            -r infra/requirements.txt -c infra/constraints.txt
        echo "$want" >"$venv/.timeline-requirements"
    fi
}

moto_start() {
    local venv=$1 log=$2
    mkdir -p "$(dirname "$log")"
    MOTO_PORT=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # One request at a time (see moto_server.py: moto's transactions are not isolated).
    MOTO_PORT=$MOTO_PORT "$venv/bin/python" infra/moto_server.py "$MOTO_PORT" >"$log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 1 100); do
        if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MOTO_PORT/moto-api/')" 2>/dev/null; then
            break
        fi
        if ! kill -0 "$MOTO_PID" 2>/dev/null; then
            echo "moto did not start; see $log" >&2
            return 1
        fi
        sleep 0.2
    done
    export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
    export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
    # Never read a developer's real profile while pointed at an emulator.
    export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
    echo "==> moto server on $AWS_ENDPOINT_URL (pid $MOTO_PID)"
}

moto_stop() {
    if [ -n "${MOTO_PID:-}" ] && kill -0 "$MOTO_PID" 2>/dev/null; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
}
