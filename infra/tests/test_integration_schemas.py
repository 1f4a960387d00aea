"""The integration events' JSON Schemas are valid draft-07 schemas, strict about unknown fields,
and their examples fit them (checked with the reference validator, not only the project's own)."""

import json

import jsonschema
import pytest

from conftest import ROOT

SCHEMAS = sorted((ROOT / "shared/core/schemas/integration").glob("*.v1.json"))


def test_there_are_schemas():
    assert len(SCHEMAS) >= 6


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_each_schema_is_valid_strict_and_fits_its_example(path):
    schema = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == path.name.removesuffix(".v1.json")
    assert schema["additionalProperties"] is False
    assert schema["properties"]["data"]["additionalProperties"] is False
    validator = jsonschema.Draft7Validator(schema)
    for example in schema["examples"]:
        validator.validate(example)
    changed = dict(schema["examples"][0], extra=1)
    assert not validator.is_valid(changed)
