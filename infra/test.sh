#!/usr/bin/env bash
# The test command: installs what the tests need (a virtualenv with pinned tools: moto server,
# PostgreSQL server binaries, cfn-lint, SAM CLI, pytest, cargo-lambda; Debian's Chromium for
# the page's browser test), checks the deployment (cfn-lint, `sam validate
# --lint`, the template's properties and the LocalStack bootstrap in pytest), starts moto on
# 127.0.0.1, runs formatting, lint and every Rust test against it, plays the README's first
# command (the local runner and its demo) to its end, then builds the Lambda
# artifacts the way `sam build` does (cargo-lambda, release, arm64) and prints their sizes.
# Stops what it started. Nothing here calls AWS. Usage: infra/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$SECONDS
timings=()
step() {
    echo "==> $*"
    step_name=$*
    step_started=$SECONDS
}
done_step() { timings+=("$(printf '%5ss  %s' $((SECONDS - step_started)) "$step_name")"); }

source infra/moto.sh
venv="$root/.venv"
step "virtualenv (infra/requirements.txt)"
ensure_venv "$venv"
done_step
# The venv's tools (cfn-lint, sam, pytest, cargo-lambda with its zig) come first.
export PATH="$venv/bin:$PATH"

# SAM CLI offline: no telemetry, and its weekly "newer version?" request to PyPI is marked as
# just done in a config directory of our own (not ~/.aws-sam).
export SAM_CLI_TELEMETRY=0 __SAM_CLI_APP_DIR="$root/target/sam-cli"
mkdir -p "$__SAM_CLI_APP_DIR"
python3 -c 'import json, sys, time; json.dump({"telemetryEnabled": False, "lastVersionCheck": time.time()}, open(sys.argv[1], "w"))' \
    "$__SAM_CLI_APP_DIR/metadata.json"

# The timeline page's test drives a real browser: Debian's Chromium, installed when missing
# (as root; otherwise that one test says it is skipped).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "apt-get install chromium (the timeline page's browser test)"
        apt-get install -y -q chromium >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
        done_step
    else
        echo "==> no chromium, and no root to install it: the page's browser test will be skipped" >&2
    fi
fi

step "cfn-lint template.yaml"
cfn-lint template.yaml
done_step

step "sam validate --lint (offline: cfn-lint rules with SAM's schema, region only for the rules)"
AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    AWS_ACCESS_KEY_ID=none AWS_SECRET_ACCESS_KEY=none sam validate --lint -t template.yaml
done_step

moto_start "$venv" "$root/target/moto.log"
trap moto_stop EXIT INT TERM

step "pytest infra/tests (template properties, resources.json, LocalStack bootstrap on moto)"
pytest -q -p no:cacheprovider infra/tests
done_step

step "cargo fmt --check"
cargo fmt --all -- --check
done_step
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
done_step
step "cargo test (moto at $AWS_ENDPOINT_URL)"
cargo test --workspace --locked "$@"
done_step
moto_stop

# The README's first command, exactly as a new user runs it (the embedded backend, no
# emulator), on a fresh data directory and a free port; it stops once the demo has played.
step "infra/run.sh (the README's first command, until the demo has played)"
demo_dir=$(mktemp -d)
(unset AWS_ENDPOINT_URL; infra/run.sh --exit-after-demo --port 0 --data-dir "$demo_dir/data")
rm -rf "$demo_dir"
done_step

# The deployment artifacts, as `sam build` makes them: for each function of template.yaml,
# `cargo lambda build --release --arm64 --bin <Binary>` from the workspace root (one cargo
# invocation for all of them here: same flags, same feature resolution, one lock).
mapfile -t binaries < <(sed -n 's/^ *Binary: *\([A-Za-z0-9_-]*\) *$/\1/p' template.yaml)
step "cargo lambda build --release --arm64 (${binaries[*]})"
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu
fi
bin_args=()
for b in "${binaries[@]}"; do bin_args+=(--bin "$b"); done
cargo lambda build --release --arm64 --locked "${bin_args[@]}"
done_step
# And SAM's own builder over the same target directory (each function's build is then a no-op):
# proves that `sam build` finds every binary of the workspace; the artifacts are compared below.
step "sam build (offline; .aws-sam/build)"
sam build --template-file template.yaml
done_step

echo "==> Lambda artifacts (provided.al2023, arm64; target/lambda/<binary>/bootstrap and .zip)"
python3 - <<'PY'
import filecmp, os, sys, zipfile
from samtranslator.yaml_helper import yaml_parse

template = yaml_parse(open("template.yaml").read())
functions = {
    name: r["Metadata"]["BuildProperties"]["Binary"]
    for name, r in template["Resources"].items()
    if r["Type"] == "AWS::Serverless::Function"
}
print(f"{'function':<24} {'binary':<16} {'bootstrap':>10} {'zip':>9}")
for name, b in functions.items():
    path = f"target/lambda/{b}/bootstrap"
    with open(path, "rb") as f:
        head = f.read(20)
    # An ELF executable for machine 183 (EM_AARCH64): what Lambda's arm64 runtime runs.
    if head[:4] != b"\x7fELF" or int.from_bytes(head[18:20], "little") != 183:
        sys.exit(f"{path} is not an arm64 ELF executable")
    if not filecmp.cmp(path, f".aws-sam/build/{name}/bootstrap", shallow=False):
        sys.exit(f"sam build made another {name} than {path}")
    # The zip Lambda receives (what `sam deploy` uploads): bootstrap, executable, deflated.
    entry = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
    entry.external_attr = 0o100755 << 16
    entry.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path + ".zip", "w") as z, open(path, "rb") as f:
        z.writestr(entry, f.read())
    mb = lambda p: f"{os.path.getsize(p) / 1e6:.1f} MB"
    print(f"{name:<24} {b:<16} {mb(path):>10} {mb(path + '.zip'):>9}")
PY

echo "==> step times"
printf '%s\n' "${timings[@]}"
echo "    total: $((SECONDS - started))s"
