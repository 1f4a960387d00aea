#!/bin/bash
# LocalStack ready hook: creates the stream, tables and bucket of infra/resources.json with
# infra/localstack/bootstrap.py (both mounted read-only by ../../docker-compose.yml), the same
# definitions the Rust bootstrap and template.yaml use. Runs inside the container.
set -euo pipefail

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://localhost:4566}"

# LocalStack's own interpreter has boto3; fall back to the image's python3.
python=/opt/code/localstack/.venv/bin/python
[ -x "$python" ] || python=python3

exec "$python" /opt/timeline/infra/localstack/bootstrap.py
