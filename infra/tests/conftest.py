"""Fixtures of the infrastructure tests: the SAM template, its CloudFormation transform (done
offline by samtranslator, as `sam deploy` has CloudFormation do it), and infra/resources.json.

Run by infra/test.sh (`pytest infra/tests`), with the moto server it starts in AWS_ENDPOINT_URL.
"""

import copy
import json
import os
import pathlib

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A fake account: the transform never calls AWS (no managed policy is looked up by name, and
# the region comes from this session, not from a profile).
REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture(scope="session")
def resources():
    return json.loads((ROOT / "infra" / "resources.json").read_text())


@pytest.fixture(scope="session")
def template():
    """template.yaml as written (short-form intrinsics become {"Ref": ...} etc.)."""
    return yaml_parse((ROOT / "template.yaml").read_text())


@pytest.fixture(scope="session", params=["inline", "stream"])
def publish_mode(request):
    """Each value of the template's PublishMode: every test of the transform runs with both."""
    return request.param


@pytest.fixture(scope="session", params=["dynamodb", "aurora-postgresql"])
def read_store(request):
    """Each value of the template's ReadStore: every test of the transform runs with both."""
    return request.param


def deployed_as(node, conditions):
    """The template as CloudFormation deploys it with these conditions: their resources kept or
    dropped, their `Fn::If` decided (`AWS::NoValue` removed). Other conditions stay as written."""
    no_value = {"Ref": "AWS::NoValue"}
    if isinstance(node, dict):
        if set(node) == {"Fn::If"} and node["Fn::If"][0] in conditions:
            condition, then, otherwise = node["Fn::If"]
            return deployed_as(then if conditions[condition] else otherwise, conditions)
        out = {}
        for key, value in node.items():
            condition = value.get("Condition") if isinstance(value, dict) else None
            if isinstance(condition, str) and conditions.get(condition) is False:
                continue
            value = deployed_as(value, conditions)
            if value != no_value:
                out[key] = value
        return out
    if isinstance(node, list):
        return [v for v in (deployed_as(v, conditions) for v in node) if v != no_value]
    return node


@pytest.fixture(scope="session")
def transformed(template, publish_mode, read_store):
    """The CloudFormation template that the SAM transform makes of template.yaml, as deployed
    with `PublishMode` set to `publish_mode` and `ReadStore` to `read_store`."""
    sam = copy.deepcopy(template)
    for name, resource in sam["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            # What `sam package` does: the built code is uploaded and CodeUri points at it.
            resource["Properties"]["CodeUri"] = f"s3://artifacts/{name}.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    translator = Translator(
        # Map of managed policy names to ARNs; empty: the template names none.
        {},
        Parser(),
        boto_session=boto3.Session(region_name=REGION),
    )
    translated = translator.translate(
        sam,
        parameter_values={
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": "timeline",
        },
    )
    stream = publish_mode == "stream"
    aurora = read_store == "aurora-postgresql"
    return deployed_as(
        translated,
        {
            "RelayByStream": stream,
            "PublishInline": not stream,
            "UseAurora": aurora,
            "UseDynamoDbReadStore": not aurora,
        },
    )
