#!/usr/bin/env python3
"""Creates the stream, tables and bucket of infra/resources.json on an emulator.

LocalStack's ready hook (init/ready.d/bootstrap.sh) runs it inside the container; the
infrastructure tests run it against moto. It is the Python twin of the Rust bootstrap in
shared/aws/src/resources.rs: both read the same file, so LocalStack, moto and the deployed
template (checked against the file by infra/tests/test_template.py) cannot drift.

Endpoint, region and credentials come from the environment, as for any boto3 client
(AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID...). Names come from the same variables
the functions read (EVENT_STREAM_NAME, WRITE_MODEL_TABLE, ...), else the file's local names.
Safe to run again: what exists is left as it is.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

DEFINITIONS = pathlib.Path(__file__).resolve().parent.parent / "resources.json"


def load(path=DEFINITIONS):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve_names(defs, environ=os.environ, prefix=""):
    """logical id -> name: the variable the functions read, else prefix + the local name."""
    out = {}
    for d in [defs["stream"], defs["bucket"], *defs["tables"]]:
        out[d["logical_id"]] = environ.get(d["env"]) or prefix + d["local_name"]
    return out


def table_request(spec, name):
    """The CreateTable request for one table of the file (string keys, on-demand billing)."""

    def keys(hash_key, range_key):
        k = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key:
            k.append({"AttributeName": range_key, "KeyType": "RANGE"})
        return k

    attributes = {spec["hash_key"], spec["range_key"]}
    for index in spec["indexes"]:
        attributes |= {index["hash_key"], index["range_key"]}
    attributes.discard(None)
    request = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": keys(spec["hash_key"], spec["range_key"]),
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
    }
    if spec["indexes"]:
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index["name"],
                "KeySchema": keys(index["hash_key"], index["range_key"]),
                "Projection": {"ProjectionType": index["projection"]},
            }
            for index in spec["indexes"]
        ]
    if spec["stream_view"]:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": spec["stream_view"]}
    return request


def create_table(dynamodb, spec, name):
    try:
        dynamodb.create_table(**table_request(spec, name))
        created = True
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
        created = False
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if spec["ttl_attribute"]:
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": spec["ttl_attribute"], "Enabled": True},
            )
    return created


def create_stream(kinesis, spec, name):
    try:
        kinesis.create_stream(StreamName=name, ShardCount=spec["local_shards"])
        created = True
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
        created = False
    for _ in range(300):
        status = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            return created
        time.sleep(0.1)
    raise RuntimeError(f"stream {name} did not become active")


def create_bucket(s3, name, region):
    # In us-east-1 CreateBucket on a bucket one already owns succeeds, so ask first.
    try:
        s3.head_bucket(Bucket=name)
        return False
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
    request = {"Bucket": name}
    if region and region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**request)
        return True
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        return False


def bootstrap(session=None, defs=None, names=None, log=print):
    """Creates everything; returns logical id -> name."""
    defs = defs or load()
    names = names or resolve_names(defs)
    session = session or boto3.session.Session()
    region = session.region_name or "us-east-1"
    # Emulators serve buckets by path, not by virtual host.
    s3 = session.client("s3", region_name=region, config=Config(s3={"addressing_style": "path"}))
    kinesis = session.client("kinesis", region_name=region)
    dynamodb = session.client("dynamodb", region_name=region)

    def report(kind, logical_id, created):
        log(f"{kind} {names[logical_id]} ({logical_id}): {'created' if created else 'already there'}")

    stream = defs["stream"]
    report("stream", stream["logical_id"], create_stream(kinesis, stream, names[stream["logical_id"]]))
    for table in defs["tables"]:
        report("table", table["logical_id"], create_table(dynamodb, table, names[table["logical_id"]]))
    bucket = defs["bucket"]
    report("bucket", bucket["logical_id"], create_bucket(s3, names[bucket["logical_id"]], region))
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definitions", default=str(DEFINITIONS), help="the resources file")
    parser.add_argument("--prefix", default="", help="prefix the local names (not the names set in the environment)")
    args = parser.parse_args(argv)
    defs = load(args.definitions)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "AWS itself (no AWS_ENDPOINT_URL)")
    print(f"timeline bootstrap at {endpoint}")
    names = bootstrap(defs=defs, names=resolve_names(defs, prefix=args.prefix))
    for d in [defs["stream"], defs["bucket"], *defs["tables"]]:
        print(f"export {d['env']}={names[d['logical_id']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
