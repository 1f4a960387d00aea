"""The LocalStack path cannot run here (no Docker engine), so it is kept correct by construction:
its init hook is a thin shell around infra/localstack/bootstrap.py, which these tests run for
real against the moto server that infra/test.sh starts (AWS_ENDPOINT_URL), comparing what it
created with infra/resources.json."""

import importlib.util
import os
import re
import uuid

import boto3
import pytest
import yaml
from botocore.config import Config

from conftest import ROOT

LOCALSTACK = ROOT / "infra" / "localstack"


def load_bootstrap():
    spec = importlib.util.spec_from_file_location("timeline_bootstrap", LOCALSTACK / "bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def emulator():
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    assert endpoint.startswith(("http://127.0.0.1", "http://localhost")), (
        f"run these tests with infra/test.sh (a moto server on loopback), not against {endpoint!r}"
    )
    return boto3.session.Session(region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


@pytest.fixture(scope="module")
def created(emulator, resources):
    bootstrap = load_bootstrap()
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    names = bootstrap.resolve_names(resources, environ={}, prefix=prefix)
    lines = []
    assert bootstrap.bootstrap(session=emulator, defs=resources, names=names, log=lines.append) == names
    assert all(line.endswith("created") for line in lines), lines
    # A second run (a restarted container) changes nothing and does not fail.
    again = []
    bootstrap.bootstrap(session=emulator, defs=resources, names=names, log=again.append)
    assert all(line.endswith("already there") for line in again), again
    return prefix, names


def test_it_creates_exactly_the_tables_of_the_definition(emulator, resources, created):
    prefix, names = created
    dynamodb = emulator.client("dynamodb")
    tables = [t for t in dynamodb.list_tables()["TableNames"] if t.startswith(prefix)]
    assert sorted(tables) == sorted(prefix + t["local_name"] for t in resources["tables"])
    for spec in resources["tables"]:
        described = dynamodb.describe_table(TableName=names[spec["logical_id"]])["Table"]
        keys = {k["KeyType"]: k["AttributeName"] for k in described["KeySchema"]}
        assert keys == {"HASH": spec["hash_key"], **({"RANGE": spec["range_key"]} if spec["range_key"] else {})}
        indexes = {
            i["IndexName"]: (
                {k["KeyType"]: k["AttributeName"] for k in i["KeySchema"]},
                i["Projection"]["ProjectionType"],
            )
            for i in described.get("GlobalSecondaryIndexes", [])
        }
        assert indexes == {
            i["name"]: ({"HASH": i["hash_key"], "RANGE": i["range_key"]}, i["projection"]) for i in spec["indexes"]
        }
        attributes = {spec["hash_key"], spec["range_key"]} | {
            k for i in spec["indexes"] for k in (i["hash_key"], i["range_key"])
        }
        attributes.discard(None)
        assert {(a["AttributeName"], a["AttributeType"]) for a in described["AttributeDefinitions"]} == {
            (a, "S") for a in attributes
        }
        ttl = dynamodb.describe_time_to_live(TableName=names[spec["logical_id"]])["TimeToLiveDescription"]
        if spec["ttl_attribute"]:
            assert ttl["TimeToLiveStatus"] in ("ENABLED", "ENABLING")
            assert ttl["AttributeName"] == spec["ttl_attribute"]
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_it_creates_the_stream_and_the_bucket(emulator, resources, created):
    _, names = created
    kinesis = emulator.client("kinesis")
    stream = kinesis.describe_stream_summary(StreamName=names["EventStream"])["StreamDescriptionSummary"]
    assert stream["StreamStatus"] == "ACTIVE"
    assert stream["OpenShardCount"] == resources["stream"]["local_shards"]
    s3 = emulator.client("s3", config=Config(s3={"addressing_style": "path"}))
    s3.head_bucket(Bucket=names["ArchiveBucket"])


def test_names_follow_the_functions_variables(resources):
    bootstrap = load_bootstrap()
    names = bootstrap.resolve_names(resources, environ={"WRITE_MODEL_TABLE": "mine"})
    assert names["WriteModelTable"] == "mine"
    assert names["ReadModelTable"] == "timeline-read-models"
    assert names["EventStream"] == "timeline-events"


def test_the_init_hook_runs_the_bootstrap_on_the_mounted_definition():
    hook = LOCALSTACK / "init" / "ready.d" / "bootstrap.sh"
    assert os.access(hook, os.X_OK), "LocalStack runs only executable hooks"
    text = hook.read_text()
    assert text.startswith("#!/bin/bash\n")
    (script,) = re.findall(r"exec \"\$python\" (\S+)", text)
    compose = yaml.safe_load((LOCALSTACK / "docker-compose.yml").read_text())
    service = compose["services"]["localstack"]
    mounts = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        mounts[target] = (source, mode)
    # The script it runs is bootstrap.py, and bootstrap.py finds resources.json where it is in
    # the repository (../resources.json), both mounted read-only.
    assert mounts[script] == ("./bootstrap.py", ["ro"])
    definitions = str((os.path.dirname(os.path.dirname(script)))) + "/resources.json"
    assert mounts[definitions] == ("../resources.json", ["ro"])
    assert mounts["/etc/localstack/init/ready.d"] == ("./init/ready.d", ["ro"])
    assert (LOCALSTACK / "../resources.json").resolve() == ROOT / "infra" / "resources.json"


def test_the_compose_file_pins_a_localstack_4_release_on_loopback():
    compose = yaml.safe_load((LOCALSTACK / "docker-compose.yml").read_text())
    service = compose["services"]["localstack"]
    assert re.fullmatch(r"localstack/localstack:4\.\d+\.\d+", service["image"]), service["image"]
    assert service["ports"] == ["127.0.0.1:4566:4566"]
    services = re.search(r":-([a-z0-9,-]+)\}", service["environment"]["SERVICES"]).group(1).split(",")
    assert set(services) >= {"kinesis", "dynamodb", "s3", "firehose", "sqs", "lambda", "iam", "sts", "logs"}
