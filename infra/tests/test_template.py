"""Properties of the deployment that a template can silently lose: checked on the SAM template
and on its CloudFormation transform, offline."""

import json
import re
import tomllib

import pytest

from conftest import ROOT, deployed_as

# ---------------------------------------------------------------------------------------------
# helpers


def of_type(resources, kind):
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def functions(template):
    return of_type(template["Resources"], "AWS::Serverless::Function")


def listify(value):
    return value if isinstance(value, list) else [value]


def ref_target(value):
    """The logical id a {"Ref": X} / {"Fn::GetAtt": [X, ...]} / "${X.Arn}" value points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return target[0] if isinstance(target, list) else target.split(".")[0]
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            found = re.findall(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z]+)?\}", text)
            return found[0] if found else None
    return None


def names_a_resource(value):
    """An ARN, or an intrinsic that makes one of a resource of the template (a Sub that builds an
    ARN by hand, such as a table name pattern, counts)."""
    if isinstance(value, str):
        return value.startswith("arn:")
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
        return text.startswith(("arn:", "${")) and text not in ("arn:*", "${AWS::Partition}:*")
    return ref_target(value) is not None


def policy_documents(transformed):
    """(where, statement) for every statement of every policy in the transformed template."""
    for name, r in transformed["Resources"].items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                for s in listify(policy["PolicyDocument"]["Statement"]):
                    yield f"{name}/{policy['PolicyName']}", s
        elif r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for s in listify(props["PolicyDocument"]["Statement"]):
                yield name, s
        elif r["Type"] in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
            for s in listify(props["PolicyDocument"]["Statement"]):
                yield name, s


def binaries():
    """Every [[bin]] of the function crates: name -> crate directory."""
    out = {}
    for manifest in sorted((ROOT / "functions").glob("*/Cargo.toml")):
        for b in tomllib.loads(manifest.read_text()).get("bin", []):
            out[b["name"]] = manifest.parent
    return out


def env_constants():
    """The variable names of shared/aws/src/config.rs: constant -> variable."""
    text = (ROOT / "shared" / "aws" / "src" / "config.rs").read_text()
    return dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', text))


def binary_sources(crate, binary):
    """The sources a binary is built from: its own main, and the crate's library if it uses it."""
    own = crate / "src" / "main.rs" if (crate / "src" / "main.rs").exists() and crate.name == binary else crate / "src" / "bin" / f"{binary}.rs"
    sources = [own]
    library = crate.name.replace("-", "_") + "::"
    if library in own.read_text() or own.name == "main.rs":
        sources += [
            p for p in (crate / "src").rglob("*.rs") if "bin" not in p.relative_to(crate / "src").parts and p.name != "main.rs"
        ]
    return sources


def required_variables(crate, binary):
    """The variables a binary reads with `required(...)` (it stops at start-up without)."""
    constants = env_constants()
    names = set()
    for source in binary_sources(crate, binary):
        text = source.read_text()
        for const in re.findall(r"required\(\s*(\w+)", text):
            names.add(constants[const])
        # The write side's ports (shared/aws/src/lib.rs) name the table and the stream.
        if "write_ports(" in text:
            names |= {constants["WRITE_MODEL_TABLE"], constants["EVENT_STREAM_NAME"]}
    return names


def opens_the_read_store(crate, binary):
    """Whether a binary opens the read store its environment names."""
    text = "".join(p.read_text() for p in binary_sources(crate, binary))
    return "read_store::open_from_env" in text or "ReadStoreSettings::from_env" in text


# ---------------------------------------------------------------------------------------------
# functions


def test_every_function_is_al2023_arm64_built_by_cargo_lambda_with_its_own_binary(template, transformed):
    fns = functions(template)
    assert len(fns) >= 6
    known = binaries()
    seen = set()
    for name, fn in fns.items():
        meta = fn.get("Metadata", {})
        assert meta.get("BuildMethod") == "rust-cargolambda", name
        binary = meta["BuildProperties"]["Binary"]
        assert binary in known, f"{name}: no [[bin]] named {binary} under functions/"
        assert binary not in seen, f"{name}: binary {binary} used twice"
        seen.add(binary)
        assert fn["Properties"]["CodeUri"] == ".", f"{name}: SAM builds from the workspace root"
    assert seen == set(known), "every function binary is deployed"
    for name, fn in of_type(transformed["Resources"], "AWS::Lambda::Function").items():
        p = fn["Properties"]
        assert p["Runtime"] == "provided.al2023", name
        assert p["Architectures"] == ["arm64"], name
        assert p["Handler"] == "bootstrap", name
        assert p["LoggingConfig"]["LogFormat"] == "JSON", name
        assert 128 <= p["MemorySize"] <= 3008, name
        assert 1 <= p["Timeout"] <= 900, name


def test_api_functions_answer_within_the_api_gateway_timeout(template):
    for name, fn in functions(template).items():
        events = fn["Properties"].get("Events", {}).values()
        if any(e["Type"] == "Api" for e in events):
            timeout = fn["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
            assert timeout <= 29, f"{name}: API Gateway gives up after 29 s"


def test_the_command_handler_outlasts_its_calls_so_a_stalled_publish_still_answers(template):
    # The SDK's operation timeout (shared/aws/src/config.rs) bounds each call; a command
    # makes at most four in a row (head, commit, publish, confirm).
    config = (ROOT / "shared" / "aws" / "src" / "config.rs").read_text()
    operation = re.search(
        r"pub const TIMEOUTS: \(Duration, Duration\) =\s*"
        r"\(Duration::from_secs\(\d+\),\s*Duration::from_secs\((\d+)\)\)",
        config,
    )
    fn = functions(template)["CommandHandlerFunction"]["Properties"]
    assert 4 * int(operation.group(1)) < fn["Timeout"] <= 29


def read_store_conditions(read_store):
    aurora = read_store == "aurora-postgresql"
    return {"UseAurora": aurora, "UseDynamoDbReadStore": not aurora}


# What a function that opens the read store (shared/aws/src/read_store.rs) needs, per ReadStore.
READ_STORE_VARIABLES = {
    "dynamodb": {"READ_STORE", "READ_MODEL_TABLE"},
    "aurora-postgresql": {"READ_STORE", "READ_STORE_URL", "READ_STORE_AUTH"},
}


def test_every_function_environment_names_resources_that_exist(template, transformed, resources, read_store):
    by_env = {t["env"]: t["logical_id"] for t in resources["tables"]}
    by_env[resources["stream"]["env"]] = resources["stream"]["logical_id"]
    by_env[resources["bucket"]["env"]] = resources["bucket"]["logical_id"]
    by_env["EVENT_BUS_NAME"] = "IntegrationBus"
    known = binaries()
    all_resources = transformed["Resources"]
    for name, fn in functions(deployed_as(template, read_store_conditions(read_store))).items():
        variables = fn["Properties"].get("Environment", {}).get("Variables", {})
        for var, value in variables.items():
            if var == "READ_STORE":
                assert value == {"Ref": "ReadStore"}, name
                continue
            if var == "READ_STORE_AUTH":
                assert value == "iam", f"{name}: the read store is reached with IAM tokens only"
                continue
            if var == "READ_STORE_URL":
                url = value["Fn::Sub"]
                assert url == "postgres://timeline@${ReadStoreProxy.Endpoint}:5432/timeline?sslmode=require", name
                continue
            if var == resources["bucket"]["prefix_env"]:
                assert value == resources["bucket"]["prefix"], f"{name}: {var}"
                continue
            if var == "PUBLISH_MODE":
                assert value == {"Ref": "PublishMode"}, name
                continue
            if var == "MIMALLOC_ARENA_EAGER_COMMIT":
                assert value == "0", f"{name}: {var}"
                continue
            target = ref_target(value)
            assert target in all_resources, f"{name}: {var} names no resource of the template"
            assert by_env.get(var) == target, f"{name}: {var} must name {by_env.get(var)}"
        # And nothing the code requires at start-up is missing.
        binary = fn["Metadata"]["BuildProperties"]["Binary"]
        crate = known[binary]
        needed = required_variables(crate, binary)
        if opens_the_read_store(crate, binary):
            needed |= READ_STORE_VARIABLES[read_store]
        missing = needed - set(variables)
        assert not missing, f"{name} ({crate.name}) needs {sorted(missing)}"
        # A binary on mimalloc starts without committing a whole arena (see the processor).
        if any("mimalloc::MiMalloc" in p.read_text() for p in binary_sources(crate, binary)):
            assert variables.get("MIMALLOC_ARENA_EAGER_COMMIT") == "0", name


def test_the_operators_functions_are_not_on_the_public_api(template, transformed):
    body = str(transformed["Resources"]["Api"]["Properties"]["Body"])
    for name in ("HydratorFunction", "MaintenanceFunction"):
        assert not functions(template)[name]["Properties"].get("Events"), name
        assert f"{name}.Arn" not in body, name


# ---------------------------------------------------------------------------------------------
# the processor's event source mapping


def test_the_processors_mapping_reports_partial_failures_and_never_discards(transformed):
    mappings = of_type(transformed["Resources"], "AWS::Lambda::EventSourceMapping")
    (mapping,) = [m for m in mappings.values() if m["Properties"]["FunctionName"] == {"Ref": "ProcessorFunction"}]
    p = mapping["Properties"]
    # The stream itself, or its own consumer of it (see the fan-out test).
    assert ref_target(p["EventSourceArn"]["Fn::If"][2]) == "EventStream"
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert p["BisectBatchOnFunctionError"] is True
    # Forever: the processor parks what it can never apply, so a failed batch is one a
    # retry may fix; discarding by count or age would leave a gap in every entity it held.
    assert p["MaximumRetryAttempts"] == -1
    assert p["MaximumRecordAgeInSeconds"] == -1
    destination = p["DestinationConfig"]["OnFailure"]["Destination"]
    assert ref_target(destination) == "ProcessorFailureQueue"
    assert transformed["Resources"]["ProcessorFailureQueue"]["Type"] == "AWS::SQS::Queue"
    assert p["ParallelizationFactor"] >= 1
    assert p["StartingPosition"] == "TRIM_HORIZON"


def filter_matches(pattern, record):
    """Lambda's event filtering (EventBridge pattern syntax) for what the relay's filter uses:
    lists of values, nesting, and `exists`."""
    for key, rule in pattern.items():
        present = isinstance(record, dict) and key in record
        if isinstance(rule, dict):
            if not present or not filter_matches(rule, record[key]):
                return False
            continue
        ok = False
        for option in rule:
            if isinstance(option, dict) and "exists" in option:
                ok |= option["exists"] == present
            else:
                ok |= present and record[key] == option
        if not ok:
            return False
    return True


def stream_record(event_name, pk, outbox):
    image = {"pk": {"S": pk}, "version": {"N": "3"}}
    if outbox:
        image["outbox"] = {"S": "pending#4"}
    change = {"Keys": {"pk": {"S": pk}}, "SequenceNumber": "1"}
    if event_name != "REMOVE":
        change["NewImage"] = image
    return {"eventName": event_name, "dynamodb": change}


def test_with_publish_mode_stream_a_relay_reads_the_write_model_tables_stream(transformed, publish_mode):
    resources = transformed["Resources"]
    table = resources["WriteModelTable"]["Properties"]
    handler = resources["CommandHandlerFunction"]["Properties"]
    assert handler["Environment"]["Variables"]["PUBLISH_MODE"] == {"Ref": "PublishMode"}
    if publish_mode == "inline":
        assert "StreamSpecification" not in table
        assert "OutboxRelayFunction" not in resources
        return
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    mappings = of_type(resources, "AWS::Lambda::EventSourceMapping")
    (mapping,) = [m for m in mappings.values() if m["Properties"]["FunctionName"] == {"Ref": "OutboxRelayFunction"}]
    p = mapping["Properties"]
    assert p["EventSourceArn"] == {"Fn::GetAtt": ["WriteModelTable", "StreamArn"]}
    assert p["StartingPosition"] == "TRIM_HORIZON"
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert p["BisectBatchOnFunctionError"] is True
    # Retried, never skipped (a record past the stream's 24 hours still has its outbox in the
    # head, for the sweep).
    assert p["MaximumRetryAttempts"] == -1
    assert p["MaximumRecordAgeInSeconds"] == -1
    # The filter passes exactly what the relay's own rule (`relay_change`) relays.
    (only,) = p["FilterCriteria"]["Filters"]
    pattern = json.loads(only["Pattern"])
    assert filter_matches(pattern, stream_record("INSERT", "ride#r1", outbox=True))
    assert filter_matches(pattern, stream_record("MODIFY", "video#v1", outbox=True))
    assert not filter_matches(pattern, stream_record("MODIFY", "ride#r1", outbox=False)), "a confirm"
    assert not filter_matches(pattern, stream_record("INSERT", "idem#k1", outbox=False)), "a key"
    assert not filter_matches(pattern, stream_record("REMOVE", "ride#r1", outbox=True))
    alarms = {
        (a["Properties"]["MetricName"], ref_target(a["Properties"]["Dimensions"][0]["Value"]))
        for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
    }
    assert ("IteratorAge", "OutboxRelayFunction") in alarms


def test_the_processor_reads_the_stream_shared_or_through_its_own_enhanced_fan_out_consumer(template, transformed):
    assert template["Parameters"]["ProcessorFanOut"]["Default"] == "shared"
    mappings = of_type(transformed["Resources"], "AWS::Lambda::EventSourceMapping")
    (mapping,) = [m for m in mappings.values() if m["Properties"]["FunctionName"] == {"Ref": "ProcessorFunction"}]
    assert mapping["Properties"]["EventSourceArn"] == {
        "Fn::If": [
            "ProcessorEnhancedFanOut",
            {"Fn::GetAtt": ["ProcessorStreamConsumer", "ConsumerARN"]},
            {"Fn::GetAtt": ["EventStream", "Arn"]},
        ]
    }
    consumer = template["Resources"]["ProcessorStreamConsumer"]
    assert consumer["Condition"] == "ProcessorEnhancedFanOut"
    assert ref_target(consumer["Properties"]["StreamARN"]) == "EventStream"


def test_the_outbox_sweep_runs_on_a_schedule(transformed):
    rules = of_type(transformed["Resources"], "AWS::Events::Rule")
    targets = [t for r in rules.values() for t in r["Properties"]["Targets"]]
    assert any(ref_target(t["Arn"]) == "OutboxSweepFunction" for t in targets)
    assert any(r["Properties"].get("ScheduleExpression", "").startswith("rate(") for r in rules.values())


# ---------------------------------------------------------------------------------------------
# IAM

# What SAM attaches by itself to the roles it makes: CloudWatch Logs writes (the function's
# logs), X-Ray writes (for Tracing: Active; X-Ray has no resource-level permissions) and, for
# the processor's Kinesis mapping, the read access Lambda's poller uses.
SAM_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
KINESIS_POLLER_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaKinesisExecutionRole"
# SAM attaches this to a function on a DynamoDB stream (read the stream, list streams).
DYNAMODB_STREAM_POLLER_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole"


def test_no_allow_statement_has_a_wildcard_action_or_an_unnamed_resource(transformed):
    statements = list(policy_documents(transformed))
    assert len(statements) >= 10
    for where, s in statements:
        if s["Effect"] == "Deny":
            # A deny may be broad on purpose (the bucket's TLS-only policy denies s3:*).
            continue
        assert s["Effect"] == "Allow", where
        assert "NotAction" not in s and "NotResource" not in s, where
        for action in listify(s["Action"]):
            assert "*" not in action, f"{where}: wildcard action {action}"
        for resource in listify(s["Resource"]):
            assert resource != "*", f"{where}: {s['Action']} on every resource"
            assert names_a_resource(resource), f"{where}: {resource}"


API_GATEWAY_LOGS_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"


VPC_ACCESS_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
# With ReadStore aurora-postgresql: the functions that reach the read store.
IN_THE_VPC = {
    "ProcessorFunction",
    "QueryFunction",
    "HydratorFunction",
    "MaintenanceFunction",
    "HydratorApiFunction",
    "ReadStoreMigrateFunction",
}


def managed_policies(role):
    return {
        m if isinstance(m, str) else m["Fn::Sub"].replace("${AWS::Partition}", "aws") if "Fn::Sub" in m else m["Ref"]
        for m in role["Properties"].get("ManagedPolicyArns", [])
    }


def test_roles_carry_only_the_managed_policies_sam_attaches(transformed, read_store):
    roles = of_type(transformed["Resources"], "AWS::IAM::Role")
    for name, role in roles.items():
        managed = managed_policies(role)
        pollers = ("ProcessorFunctionRole", "DistributorFunctionRole")
        allowed = SAM_MANAGED_POLICIES | ({KINESIS_POLLER_POLICY} if name in pollers else set())
        if name.removesuffix("Role") in IN_THE_VPC:
            # Their network interfaces in the VPC: SAM attaches this whenever a function has a
            # VpcConfig, even one that ReadStore dynamodb leaves empty.
            allowed = allowed | {VPC_ACCESS_POLICY}
            if read_store == "aurora-postgresql":
                # And the one grant to the database.
                allowed = allowed | {"ReadStoreConnectPolicy"}
                assert {VPC_ACCESS_POLICY, "ReadStoreConnectPolicy"} <= managed, name
        if name == "ReadStoreProxyRole":
            allowed = set()
        if name == "OutboxRelayFunctionRole":
            allowed = SAM_MANAGED_POLICIES | {DYNAMODB_STREAM_POLLER_POLICY}
        if name == "ApiGatewayCloudWatchRole":
            allowed = {API_GATEWAY_LOGS_POLICY}
        assert managed <= allowed, f"{name}: {managed - allowed}"
        for s in listify(role["Properties"]["AssumeRolePolicyDocument"]["Statement"]):
            assert s["Action"] in ("sts:AssumeRole", ["sts:AssumeRole"]), name
            if name == "ReadStoreProxyRole":
                assert s["Principal"] == {"Service": "rds.amazonaws.com"}
            elif name == "VideoPipelineRole":
                # Principals of this account only (whoever the account lets assume it).
                assert s["Principal"] == {"AWS": {"Fn::Sub": "arn:aws:iam::${AWS::AccountId}:root"}}
            else:
                assert set(s["Principal"]) == {"Service"}, name


def test_each_function_may_touch_only_what_it_uses(transformed, publish_mode, read_store):
    def grants(role):
        out = {}
        for policy in transformed["Resources"][role]["Properties"].get("Policies", []):
            for s in listify(policy["PolicyDocument"]["Statement"]):
                for action in listify(s["Action"]):
                    out.setdefault(action.split(":")[0], set()).add(action)
        return out

    if publish_mode == "inline":
        assert set(grants("CommandHandlerFunctionRole")) == {"dynamodb", "kinesis"}
        assert grants("CommandHandlerFunctionRole")["kinesis"] == {"kinesis:PutRecord"}
        assert "OutboxRelayFunctionRole" not in transformed["Resources"]
    else:
        # The relay publishes; the command handler cannot write the event stream at all.
        assert set(grants("CommandHandlerFunctionRole")) == {"dynamodb"}
        assert grants("OutboxRelayFunctionRole") == {
            "dynamodb": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
            "kinesis": {"kinesis:PutRecord"},
        }
    if read_store == "dynamodb":
        assert set(grants("QueryFunctionRole")) == {"dynamodb"}
        assert grants("QueryFunctionRole")["dynamodb"] == {"dynamodb:GetItem", "dynamodb:Query"}
        assert set(grants("ProcessorFunctionRole")) == {"dynamodb", "sqs"}
        assert "ReadStoreConnectPolicy" not in transformed["Resources"]
    else:
        # The read models are in Aurora: no function may touch the read-model table, and
        # the only grant to the database is signing in as its one user, through the proxy.
        assert grants("QueryFunctionRole") == {}
        assert set(grants("ProcessorFunctionRole")) == {"sqs"}
        for role in ("HydratorFunctionRole", "MaintenanceFunctionRole", "HydratorApiFunctionRole"):
            for s in statements_of(transformed, role):
                assert "ReadModelTable" not in json.dumps(s["Resource"]), role
        (statement,) = transformed["Resources"]["ReadStoreConnectPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Action"] == ["rds-db:connect"]
        arn, values = statement["Resource"]["Fn::Sub"]
        assert arn.endswith(":dbuser:${ProxyId}/timeline")
        assert values["ProxyId"]["Fn::Select"][1]["Fn::Split"][1] == {"Fn::GetAtt": ["ReadStoreProxy", "DBProxyArn"]}
    assert grants("DistributorFunctionRole") == {"events": {"events:PutEvents"}}
    # Time travel, routed or invoked, only reads: the same grants for both; writing the read
    # models is the maintenance function's alone.
    writes = ("Put", "BatchWrite", "Update", "Delete")
    for role in ("HydratorApiFunctionRole", "HydratorFunctionRole"):
        assert set(grants(role)) == {"dynamodb", "kinesis", "s3"}, role
        for actions in grants(role).values():
            assert not any(a.split(":")[1].startswith(writes) for a in actions), role
    assert grants("HydratorFunctionRole") == grants("HydratorApiFunctionRole")
    maintenance = grants("MaintenanceFunctionRole")
    assert set(maintenance) == {"dynamodb", "kinesis", "s3"}
    if read_store == "dynamodb":
        assert any(a.split(":")[1].startswith(writes) for a in maintenance["dynamodb"])
    # It reads the write model's heads (verify), and writes only the read models.
    for s in statements_of(transformed, "MaintenanceFunctionRole"):
        if ref_target(s["Resource"]) == "WriteModelTable":
            assert listify(s["Action"]) == ["dynamodb:GetItem"]


def statements_of(transformed, role):
    for policy in transformed["Resources"][role]["Properties"].get("Policies", []):
        yield from listify(policy["PolicyDocument"]["Statement"])


def test_time_travel_reads_the_head_and_cannot_hurt_the_system(template, transformed):
    # It reads the write model's head (the latest version, the outbox), and nothing else of it.
    head_reads = [
        s for s in statements_of(transformed, "HydratorApiFunctionRole")
        if ref_target(s["Resource"]) == "WriteModelTable"
    ]
    assert [listify(s["Action"]) for s in head_reads] == [["dynamodb:GetItem"]]
    # Its concurrency is capped, and its routes are throttled tighter than the rest.
    fn = functions(template)["HydratorApiFunction"]["Properties"]
    assert fn["ReservedConcurrentExecutions"] == {"Ref": "TimeTravelConcurrency"}
    assert template["Parameters"]["TimeTravelConcurrency"]["Default"] <= 50
    settings = template["Resources"]["Api"]["Properties"]["MethodSettings"]
    default = next(m for m in settings if m["ResourcePath"] == "/*")
    paths = {
        m["ResourcePath"]: m for m in settings if m["ResourcePath"] != "/*"
    }
    for route in ["/rides/{id}/state", "/rides/{id}/timeline", "/videos/{id}/state", "/videos/{id}/timeline"]:
        m = paths["/" + route.replace("/", "~1")]
        assert m["HttpMethod"] == "GET"
        assert m["ThrottlingRateLimit"] == {"Ref": "TimeTravelRateLimit"}
        assert m["ThrottlingBurstLimit"] == {"Ref": "TimeTravelBurstLimit"}
    params = template["Parameters"]
    assert params["TimeTravelRateLimit"]["Default"] < default["ThrottlingRateLimit"]
    assert params["TimeTravelBurstLimit"]["Default"] < default["ThrottlingBurstLimit"]
    # The stage of the transformed API carries them.
    stages = of_type(transformed["Resources"], "AWS::ApiGateway::Stage")
    (stage,) = stages.values()
    assert len(stage["Properties"]["MethodSettings"]) == 5
    # Its budget (25 s, see functions/hydrator/src/api.rs) fits its timeout and API Gateway's.
    timeout = fn.get("Timeout", template["Globals"]["Function"]["Timeout"])
    budget = re.search(r"API_BUDGET: Duration = Duration::from_secs\((\d+)\)",
                       (ROOT / "functions" / "hydrator" / "src" / "api.rs").read_text())
    assert int(budget.group(1)) + 2 <= timeout <= 29


# ---------------------------------------------------------------------------------------------
# archive


def test_the_archive_bucket_is_private_encrypted_versioned_and_tls_only(template):
    resources = template["Resources"]
    bucket = resources["ArchiveBucket"]
    assert bucket["DeletionPolicy"] == "Retain"
    p = bucket["Properties"]
    assert p["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in (
        "aws:kms",
        "AES256",
    )
    assert p["VersioningConfiguration"] == {"Status": "Enabled"}
    assert p["LifecycleConfiguration"]["Rules"]
    # Object lock is an option: on when the parameter says so, in GOVERNANCE mode.
    assert p["ObjectLockEnabled"]["Fn::If"][0] == "ArchiveObjectLock"
    lock = p["ObjectLockConfiguration"]["Fn::If"]
    assert lock[0] == "ArchiveObjectLock"
    assert lock[1]["Rule"]["DefaultRetention"]["Mode"] == "GOVERNANCE"
    assert template["Conditions"]["ArchiveObjectLock"] == {"Fn::Equals": [{"Ref": "EnableObjectLock"}, "true"]}
    policies = [r for r in resources.values() if r["Type"] == "AWS::S3::BucketPolicy"]
    (policy,) = [r for r in policies if r["Properties"]["Bucket"] == {"Ref": "ArchiveBucket"}]
    tls = [
        s
        for s in listify(policy["Properties"]["PolicyDocument"]["Statement"])
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    assert len(tls) == 1
    covered = {str(r) for r in tls[0]["Resource"]}
    assert str({"Fn::GetAtt": ["ArchiveBucket", "Arn"]}) in covered or str({"Fn::GetAtt": "ArchiveBucket.Arn"}) in covered
    assert any("/*" in c for c in covered), "objects too"


def test_firehose_archives_the_stream_as_gzip_ndjson_under_the_hydrators_prefix(template, resources):
    (delivery,) = of_type(template["Resources"], "AWS::KinesisFirehose::DeliveryStream").values()
    p = delivery["Properties"]
    assert p["DeliveryStreamType"] == "KinesisStreamAsSource"
    assert ref_target(p["KinesisStreamSourceConfiguration"]["KinesisStreamARN"]) == resources["stream"]["logical_id"]
    s3 = p["ExtendedS3DestinationConfiguration"]
    assert ref_target(s3["BucketARN"]) == resources["bucket"]["logical_id"]
    assert s3["Prefix"] == resources["bucket"]["prefix"] == "events/"
    assert s3["ErrorOutputPrefix"] and not s3["ErrorOutputPrefix"].startswith(s3["Prefix"])
    assert s3["CompressionFormat"] == "GZIP"
    assert s3["BufferingHints"] == {
        "IntervalInSeconds": {"Ref": "FirehoseBufferSeconds"},
        "SizeInMBs": {"Ref": "FirehoseBufferMiB"},
    }
    processors = s3["ProcessingConfiguration"]["Processors"]
    assert s3["ProcessingConfiguration"]["Enabled"] is True
    (delimiter,) = [x for x in processors if x["Type"] == "AppendDelimiterToRecord"]
    assert {"ParameterName": "Delimiter", "ParameterValue": "\\n"} in delimiter["Parameters"]


def test_the_stream_is_encrypted_and_on_demand_unless_shards_are_asked_for(template):
    stream = template["Resources"]["EventStream"]["Properties"]
    assert stream["StreamEncryption"]["EncryptionType"] == "KMS"
    assert stream["RetentionPeriodHours"] == {"Ref": "StreamRetentionHours"}
    assert stream["StreamModeDetails"]["StreamMode"] == {"Fn::If": ["StreamOnDemand", "ON_DEMAND", "PROVISIONED"]}
    assert template["Conditions"]["StreamOnDemand"] == {"Fn::Equals": [{"Ref": "StreamShardCount"}, 0]}
    assert template["Parameters"]["StreamShardCount"]["Default"] == 0


# ---------------------------------------------------------------------------------------------
# tables: the same as infra/resources.json, which the local bootstrap creates


def expected_key_schema(hash_key, range_key):
    keys = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return keys


def test_tables_match_the_one_resource_definition(template, resources):
    tables = of_type(template["Resources"], "AWS::DynamoDB::Table")
    assert set(tables) == {t["logical_id"] for t in resources["tables"]}
    for spec in resources["tables"]:
        p = tables[spec["logical_id"]]["Properties"]
        name = spec["logical_id"]
        assert p["KeySchema"] == expected_key_schema(spec["hash_key"], spec["range_key"]), name
        indexes = {i["IndexName"]: i for i in p.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {i["name"] for i in spec["indexes"]}, name
        for index in spec["indexes"]:
            got = indexes[index["name"]]
            assert got["KeySchema"] == expected_key_schema(index["hash_key"], index["range_key"]), index["name"]
            assert got["Projection"] == {"ProjectionType": index["projection"]}, index["name"]
        attributes = {spec["hash_key"], spec["range_key"]}
        for index in spec["indexes"]:
            attributes |= {index["hash_key"], index["range_key"]}
        attributes.discard(None)
        assert sorted(p["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
            {"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)
        ], name
        if spec["stream_view"]:
            # Only with the relay that reads it (locally it is always on).
            assert p["StreamSpecification"] == {
                "Fn::If": ["RelayByStream", {"StreamViewType": spec["stream_view"]}, {"Ref": "AWS::NoValue"}]
            }, name
        else:
            assert "StreamSpecification" not in p, name
        if spec["ttl_attribute"]:
            assert p["TimeToLiveSpecification"] == {"AttributeName": spec["ttl_attribute"], "Enabled": True}, name
        else:
            assert "TimeToLiveSpecification" not in p, name
        assert p["BillingMode"] == "PAY_PER_REQUEST", name
        assert p["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name
        assert p["SSESpecification"]["SSEEnabled"] is True, name


def test_the_queries_may_use_exactly_the_read_model_indexes(template, resources):
    (read_model,) = [t for t in resources["tables"] if t["logical_id"] == "ReadModelTable"]
    dynamodb = deployed_as(template, read_store_conditions("dynamodb"))
    statements = functions(dynamodb)["QueryFunction"]["Properties"]["Policies"][0]["Statement"]
    granted = {str(r) for s in statements for r in listify(s["Resource"])}
    for index in read_model["indexes"]:
        assert any(f"/index/{index['name']}" in g for g in granted), index["name"]
    (write_model,) = [t for t in resources["tables"] if t["logical_id"] == "WriteModelTable"]
    sweep = functions(template)["OutboxSweepFunction"]["Properties"]["Policies"][0]["Statement"]
    granted = {str(r) for s in sweep for r in listify(s["Resource"])}
    for index in write_model["indexes"]:
        assert any(f"/index/{index['name']}" in g for g in granted), index["name"]


# ---------------------------------------------------------------------------------------------
# API


PIPELINE_ROUTES = {
    "/videos/{id}/start-processing",
    "/videos/{id}/progress",
    "/videos/{id}/succeed",
    "/videos/{id}/fail",
}


def test_every_route_needs_a_cognito_user_or_for_the_pipeline_an_iam_signature(template, transformed):
    api = template["Resources"]["Api"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "CognitoAuthorizer"
    assert ref_target(api["Auth"]["Authorizers"]["CognitoAuthorizer"]["UserPoolArn"]) == "UserPool"
    iam_events = set()
    for name, fn in functions(template).items():
        for event_name, event in fn["Properties"].get("Events", {}).items():
            if event["Type"] == "Api" and "Auth" in event["Properties"]:
                assert event["Properties"]["Auth"] == {"Authorizer": "AWS_IAM"}, f"{name}.{event_name}"
                iam_events.add((event["Properties"]["Path"], event["Properties"]["Method"]))
    assert iam_events == {(p, "POST") for p in PIPELINE_ROUTES}
    paths = transformed["Resources"]["Api"]["Properties"]["Body"]["paths"]
    assert len(paths) >= 10
    for path, methods in paths.items():
        for method, operation in methods.items():
            expected = [{"AWS_IAM": []}] if path in PIPELINE_ROUTES else [{"CognitoAuthorizer": []}]
            assert operation.get("security") == expected, f"{method.upper()} {path}"
    throttle = api["MethodSettings"][0]
    assert throttle["ThrottlingRateLimit"] > 0 and throttle["ThrottlingBurstLimit"] > 0


def test_cognito_groups_are_the_roles_the_policy_knows(template):
    groups = of_type(template["Resources"], "AWS::Cognito::UserPoolGroup").values()
    assert {g["Properties"]["GroupName"] for g in groups} == {"riders", "drivers", "dispatchers", "operators"}
    assert all(ref_target(g["Properties"]["UserPoolId"]) == "UserPool" for g in groups)


def test_the_pipeline_role_may_only_report_processing_and_read_videos(template):
    role = template["Resources"]["VideoPipelineRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in listify(p["PolicyDocument"]["Statement"])]
    resources = []
    for s in statements:
        assert s["Action"] == "execute-api:Invoke"
        resources += [r["Fn::Sub"] for r in listify(s["Resource"])]
    posts = {r.split("/prod/POST")[1] for r in resources if "/prod/POST/" in r}
    assert posts == {p.replace("{id}", "*") for p in PIPELINE_ROUTES}
    assert all("/prod/POST/" in r or "/prod/GET/videos" in r for r in resources)


def test_api_access_logs_with_the_account_role_api_gateway_needs(template):
    resources = template["Resources"]
    api = resources["Api"]
    logs = api["Properties"]["AccessLogSetting"]
    assert ref_target(logs["DestinationArn"]) == "ApiAccessLogs"
    for field in ("$context.requestId", "$context.status", "$context.identity.caller", "$context.authorizer.claims.sub"):
        assert field in logs["Format"], field
    # A first deploy with access logging fails unless the account has a CloudWatch role.
    assert api["DependsOn"] == "ApiGatewayAccount"
    account = resources["ApiGatewayAccount"]
    assert account["Type"] == "AWS::ApiGateway::Account"
    assert ref_target(account["Properties"]["CloudWatchRoleArn"]) == "ApiGatewayCloudWatchRole"
    trust = resources["ApiGatewayCloudWatchRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert resources["ApiAccessLogs"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_api_server_errors_and_latency_are_alarmed(template):
    alarms = of_type(template["Resources"], "AWS::CloudWatch::Alarm").values()
    on_api = {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in alarms
        if a["Properties"].get("Namespace") == "AWS/ApiGateway"
    }
    assert set(on_api) == {"5XXError", "Latency"}
    for alarm in on_api.values():
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims["ApiName"] == template["Resources"]["Api"]["Properties"]["Name"]
        assert dims["Stage"] == template["Resources"]["Api"]["Properties"]["StageName"]
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert on_api["Latency"]["ExtendedStatistic"] == "p99"


def test_the_write_model_table_holding_unpublished_events_is_retained_and_protected(template):
    table = template["Resources"]["WriteModelTable"]
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    assert table["Properties"]["DeletionProtectionEnabled"] is True


def test_firehose_logs_its_errors_and_a_silent_archive_alarms(template):
    resources = template["Resources"]
    options = resources["ArchiveDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"][
        "CloudWatchLoggingOptions"
    ]
    assert options["Enabled"] is True
    assert ref_target(options["LogGroupName"]) == "ArchiveDeliveryLogs"
    assert ref_target(options["LogStreamName"]) == "ArchiveDeliveryLogStream"
    grants = [
        s
        for p in resources["ArchiveDeliveryRole"]["Properties"]["Policies"]
        for s in listify(p["PolicyDocument"]["Statement"])
        if "logs:PutLogEvents" in listify(s["Action"])
    ]
    assert [ref_target(g["Resource"]) for g in grants] == ["ArchiveDeliveryLogs"]
    freshness = resources["ArchiveFreshnessAlarm"]["Properties"]
    assert freshness["MetricName"] == "DeliveryToS3.DataFreshness"
    assert freshness["TreatMissingData"] == "breaching"


def test_the_firehose_role_trusts_only_this_accounts_delivery_streams(template):
    trust = template["Resources"]["ArchiveDeliveryRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert len(trust) == 1
    assert trust[0]["Principal"] == {"Service": "firehose.amazonaws.com"}
    assert trust[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_the_sweep_and_time_travel_have_reserved_concurrency(template):
    fns = functions(template)
    assert fns["OutboxSweepFunction"]["Properties"]["ReservedConcurrentExecutions"] == 1
    assert fns["HydratorApiFunction"]["Properties"]["ReservedConcurrentExecutions"] == {"Ref": "TimeTravelConcurrency"}


# ---------------------------------------------------------------------------------------------
# alarms and outputs


def test_alarms_watch_iterator_age_parking_the_failure_queue_and_every_functions_errors_and_throttles(template):
    alarms = of_type(template["Resources"], "AWS::CloudWatch::Alarm").values()
    watched = set()
    for alarm in alarms:
        p = alarm["Properties"]
        assert p["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        for d in p["Dimensions"]:
            watched.add((p["MetricName"], ref_target(d["Value"])))
    assert ("IteratorAge", "ProcessorFunction") in watched
    assert ("ApproximateNumberOfMessagesVisible", "ProcessorFailureQueue") in watched
    # Parked entities: the processor's own metric (its EMF namespace and dimension).
    parked = [a["Properties"] for a in alarms if a["Properties"]["MetricName"] == "RecordsSetAside"]
    assert [(p["Namespace"], p["Statistic"], p["Threshold"]) for p in parked] == [
        ("Timeline/Processor", "Sum", 1)
    ]
    assert ("RecordsSetAside", "ProcessorFunction") in watched
    for name in functions(template):
        assert ("Errors", name) in watched, name
        assert ("Throttles", name) in watched, name
    assert template["Resources"]["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    assert template["Resources"]["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"


def test_outputs_name_what_a_user_needs(template):
    outputs = template["Outputs"]
    for name in [
        "ApiUrl",
        "EventStreamName",
        "ArchiveBucketName",
        "WriteModelTableName",
        "ReadModelTableName",
        "ProcessorFailureQueueUrl",
        "UserPoolId",
        "UserPoolClientId",
        "HydratorFunctionName",
        "MaintenanceFunctionName",
    ]:
        assert name in outputs, name


# ---------------------------------------------------------------------------------------------
# build settings the deployment depends on


def test_the_toolchain_has_the_lambda_target():
    toolchain = tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]
    assert "aarch64-unknown-linux-gnu" in toolchain.get("targets", [])


def test_samconfig_defaults():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    assert deploy["stack_name"] == "timeline"
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    assert deploy["confirm_changeset"] is True
    assert "region" not in deploy, "the user's own region, not ours"
    # Unattended deploys (CI) use `--config-env ci`: the same, without the confirmation.
    ci = config["ci"]["deploy"]["parameters"]
    assert ci["confirm_changeset"] is False
    assert {k: v for k, v in ci.items() if k != "confirm_changeset"} == {
        k: v for k, v in deploy.items() if k != "confirm_changeset"
    }


@pytest.mark.parametrize("binary", sorted(binaries()))
def test_each_binary_has_a_function(template, binary):
    names = [fn["Metadata"]["BuildProperties"]["Binary"] for fn in functions(template).values()]
    assert names.count(binary) == 1


# ---------------------------------------------------------------------------------------------
# event distribution


def test_the_distributors_mapping_keeps_order_reports_partial_failures_and_never_discards(transformed):
    mappings = of_type(transformed["Resources"], "AWS::Lambda::EventSourceMapping")
    (mapping,) = [m for m in mappings.values() if m["Properties"]["FunctionName"] == {"Ref": "DistributorFunction"}]
    p = mapping["Properties"]
    assert ref_target(p["EventSourceArn"]) == "EventStream"
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert p["MaximumRetryAttempts"] == -1 and p["MaximumRecordAgeInSeconds"] == -1
    # One batch at a time per shard: the bus receives each entity's events in order.
    assert p["ParallelizationFactor"] == 1
    assert p["StartingPosition"] == "TRIM_HORIZON"


def test_the_bus_has_an_archive_and_the_schema_registry_holds_the_repositorys_schemas(template):
    resources = template["Resources"]
    archive = resources["IntegrationArchive"]["Properties"]
    assert ref_target(archive["SourceArn"]) == "IntegrationBus"
    assert archive["RetentionDays"] == {"Ref": "IntegrationArchiveDays"}
    in_template = {}
    for r in of_type(resources, "AWS::EventSchemas::Schema").values():
        p = r["Properties"]
        assert ref_target(p["RegistryName"]) == "IntegrationSchemaRegistry"
        assert p["Type"] == "JSONSchemaDraft4"
        name = p["SchemaName"]["Fn::Sub"].split("@")[1]
        in_template[name] = json.loads(p["Content"])
    files = {}
    for path in (ROOT / "shared/core/schemas/integration").glob("*.v1.json"):
        schema = json.loads(path.read_text())
        for key in ("$schema", "$id", "examples"):
            schema.pop(key, None)
        files[path.name.removesuffix(".v1.json")] = schema
    for schema in in_template.values():
        assert schema.pop("$schema") == "http://json-schema.org/draft-04/schema#"
    assert in_template == files, "the registry holds exactly the repository's schemas"


def test_example_rules_deliver_to_their_targets_with_a_dead_letter_queue(template):
    resources = template["Resources"]
    rules = {
        name: r["Properties"]
        for name, r in of_type(resources, "AWS::Events::Rule").items()
        if "EventBusName" in r["Properties"]
    }
    completed = rules["RideCompletedRule"]
    assert ref_target(completed["EventBusName"]) == "IntegrationBus"
    assert completed["EventPattern"] == {"source": ["timeline.rides"], "detail-type": ["ride.completed"]}
    (target,) = completed["Targets"]
    assert ref_target(target["Arn"]) == "BillingQueue"
    assert ref_target(target["DeadLetterConfig"]["Arn"]) == "BillingDeadLetterQueue"
    failed = rules["VideoFailedRule"]
    assert failed["EventPattern"] == {"source": ["timeline.videos"], "detail-type": ["video.failed"]}
    assert ref_target(failed["Targets"][0]["Arn"]) == "VideoFailuresTopic"
    assert resources["BillingQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["BillingDeadLetterQueue", "Arn"]
    }
    # Only the rule may send to the queue, and publish to the topic.
    for policy, rule in (("BillingQueuePolicy", "RideCompletedRule"), ("VideoFailuresTopicPolicy", "VideoFailedRule")):
        (statement,) = resources[policy]["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert ref_target(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == rule


def test_distribution_failures_and_lag_are_alarmed(template):
    watched = {
        (a["Properties"]["MetricName"], ref_target(d["Value"]))
        for a in of_type(template["Resources"], "AWS::CloudWatch::Alarm").values()
        for d in a["Properties"]["Dimensions"]
    }
    assert ("IteratorAge", "DistributorFunction") in watched
    assert ("FailedInvocations", "IntegrationBus") in watched
    assert ("ApproximateNumberOfMessagesVisible", "BillingDeadLetterQueue") in watched
