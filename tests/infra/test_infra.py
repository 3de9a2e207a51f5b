"""Infrastructure as code, checked offline: the real validators, and consistency between
enc's code, taskdef.json, appspec.yaml, the Dockerfile, the workflows and the stacks.

Run by scripts/test (with ENC_BIN pointing at a built enc); the validators come from
scripts/requirements-test.txt.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ENC_BIN", ROOT / "target" / "debug" / "enc"))
VENV_BIN = Path(sys.executable).parent
STACKS = ["network", "data", "service", "deploy", "observability", "github-oidc"]
TEMPLATES = sorted((ROOT / "cloudformation").glob("*.yaml"))


def tool(name):
    found = VENV_BIN / name
    path = found if found.exists() else shutil.which(name)
    assert path, f"{name} is missing (scripts/test installs it)"
    return str(path)


def run(*args, env=None):
    return subprocess.run(
        [str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )


def template(stack):
    return cfn_yaml.load(str(ROOT / "cloudformation" / f"{stack}.yaml"))


def resources(stack, kind=None):
    all_resources = template(stack)["Resources"]
    return {k: v for k, v in all_resources.items() if kind is None or v["Type"] == kind}


def sub(value, **names):
    """Resolves a plain or !Sub string with these names."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        value = value["Fn::Sub"]
        if isinstance(value, list):
            value = value[0]
    assert isinstance(value, str), value
    return re.sub(r"\$\{([\w:]+)\}", lambda m: names.get(m.group(1), m.group(0)), value)


def taskdef():
    return json.loads((ROOT / "taskdef.json").read_text())


def container(name="enc"):
    return next(c for c in taskdef()["containerDefinitions"] if c["name"] == name)


def env_of(container_definition):
    return {e["name"]: e["value"] for e in container_definition.get("environment", [])}


def openapi_paths():
    snapshot = (ROOT / "tests/api/snapshots/api__openapi__openapi.snap").read_text()
    document = json.loads(snapshot.split("---\n", 2)[2])
    return set(document["paths"])


# The validators.

def test_every_stack_has_a_template():
    assert sorted(p.stem for p in TEMPLATES) == sorted(STACKS)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_finds_nothing(path):
    result = run(tool("cfn-lint"), path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_fails_nothing_and_every_skip_says_why():
    result = run(tool("checkov"), "-d", "cloudformation", "--framework", "cloudformation",
                 "--skip-download", "-o", "json")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    skipped = [c for r in reports for c in r["results"]["skipped_checks"]]
    assert skipped, "the report lists skipped checks"
    assert not failed, "\n".join(f"{c['check_id']} {c['resource']} {c['file_path']}" for c in failed)
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"


def test_hadolint_passes_the_dockerfile():
    result = run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes_the_workflows():
    result = run(tool("actionlint"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_the_scripts():
    # Every shell script: no suffix or .sh, and no Python interpreter line (stage-values).
    candidates = [p for p in (ROOT / "scripts").iterdir() if p.suffix in ("", ".sh")]
    pythons = [p for p in candidates if "python" in p.read_text().split("\n", 1)[0]]
    assert [p.name for p in pythons] == ["stage-values"], pythons
    scripts = [p for p in candidates if p not in pythons] + [ROOT / ".ci/run"]
    result = run(tool("shellcheck"), "-x", *scripts)
    assert result.returncode == 0, result.stdout + result.stderr


# taskdef.json against the ECS API.

def ecs_input_shape():
    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def enum_violations(shape, value, path="taskdef"):
    """Values outside the ECS model's enums (botocore's validator checks types, not enums)."""
    problems = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                problems += enum_violations(shape.members[key], item, f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            problems += enum_violations(shape.member, item, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            problems += enum_violations(shape.value, item, f"{path}.{key}")
    elif getattr(shape, "enum", None) and value not in shape.enum:
        problems.append(f"{path}={value!r} not in {shape.enum}")
    return problems


def test_taskdef_is_a_valid_register_task_definition_input():
    report = ParamValidator().validate(taskdef(), ecs_input_shape())
    assert not report.has_errors(), report.generate_report()
    assert enum_violations(ecs_input_shape(), taskdef()) == []


def test_taskdef_is_fargate_hardened_and_observable():
    td = taskdef()
    assert td["requiresCompatibilities"] == ["FARGATE"]
    assert td["networkMode"] == "awsvpc"
    fargate_memory = {"256": {"512", "1024", "2048"}, "512": {"1024", "2048", "3072", "4096"},
                      "1024": {str(m) for m in range(2048, 8193, 1024)}}
    assert td["memory"] in fargate_memory[td["cpu"]]
    for c in td["containerDefinitions"]:
        assert c["readonlyRootFilesystem"] is True, c["name"]
        assert c["user"] and not c["user"].startswith("0"), c["name"]
        assert c["logConfiguration"]["logDriver"] == "awslogs", c["name"]
        assert c["healthCheck"]["command"], c["name"]
    enc = container()
    assert enc["essential"] is True
    assert enc["healthCheck"]["command"] == ["CMD", "/usr/local/bin/enc", "healthcheck"]


# What `aws cloudformation describe-stacks` says of a service stack, with and without sign-in
# through the load balancer.
ACCOUNT = "123456789012"
SECRET_ARN = f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:enc-dev-bootstrap-token-AbCdEf"
LB_ARN = f"arn:aws:elasticloadbalancing:eu-west-1:{ACCOUNT}:loadbalancer/app/enc-dev/0123456789abcdef"
SCOPES = '{"groups=enc-admins": ["admin"], "*": ["activities:write"]}'


def service_outputs(oidc):
    outputs = {
        "TaskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/enc-dev-task",
        "ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/enc-dev-execution",
        "BootstrapTokenSecretArn": SECRET_ARN,
        "AlbOidcSigner": LB_ARN if oidc else "",
        "AlbOidcScopes": SCOPES if oidc else "",
    }
    return [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]


def render_taskdef(tmp_path, oidc):
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(service_outputs(oidc)))
    result = run(ROOT / "scripts/render-taskdef", "dev", "eu-west-1", outputs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("oidc", [False, True], ids=["tokens only", "sign-in through the ALB"])
def test_the_rendered_task_definition_is_complete_and_valid(tmp_path, oidc):
    service = template("service")
    declared = set(service["Outputs"])
    assert {o["OutputKey"] for o in service_outputs(oidc)} <= declared, "outputs the script reads"
    rendered = render_taskdef(tmp_path, oidc)
    text = json.dumps(rendered)
    assert set(re.findall(r"\{\{(\w+)\}\}", text)) == {"IMAGE"}, "only the image is left"
    rendered["containerDefinitions"][0]["image"] = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/enc@sha256:{'0' * 64}"
    report = ParamValidator().validate(rendered, ecs_input_shape())
    assert not report.has_errors(), report.generate_report()
    enc = next(c for c in rendered["containerDefinitions"] if c["name"] == "enc")
    env = env_of(enc)
    assert rendered["taskRoleArn"].endswith(":role/enc-dev-task")
    assert enc["secrets"] == [{"name": "ENC_BOOTSTRAP_TOKEN", "valueFrom": SECRET_ARN}]
    if oidc:
        assert env["ENC_ALB_OIDC_SIGNER"] == LB_ARN
        assert json.loads(env["ENC_ALB_OIDC_SCOPES"]) == json.loads(SCOPES)
    else:
        assert not any(name.startswith("ENC_ALB_OIDC_") for name in env), "unset, not empty"


def test_rendering_refuses_a_stack_without_the_outputs(tmp_path):
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps([o for o in service_outputs(False) if o["OutputKey"] != "BootstrapTokenSecretArn"]))
    result = run(ROOT / "scripts/render-taskdef", "dev", "eu-west-1", outputs)
    assert result.returncode != 0 and "BootstrapTokenSecretArn" in result.stderr


def test_the_bootstrap_token_comes_from_the_stacks_secret_and_only_the_execution_role_reads_it():
    service = resources("service")
    secret = service["BootstrapTokenSecret"]["Properties"]
    generated = secret["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32 and generated["ExcludePunctuation"] is True
    assert template("service")["Outputs"]["BootstrapTokenSecretArn"]["Value"] == {"Ref": "BootstrapTokenSecret"}
    assert "ENC_BOOTSTRAP_TOKEN" in variables_enc_reads()
    assert [s["name"] for s in container()["secrets"]] == ["ENC_BOOTSTRAP_TOKEN"]
    first = service["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert first["Secrets"] == [{"Name": "ENC_BOOTSTRAP_TOKEN", "ValueFrom": {"Ref": "BootstrapTokenSecret"}}]
    readers = []
    for name, role in resources("service", "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if any(a.startswith("secretsmanager:") for a in actions):
                    assert actions == ["secretsmanager:GetSecretValue"]
                    assert statement["Resource"] == {"Ref": "BootstrapTokenSecret"}
                    readers.append(name)
    assert readers == ["ExecutionRole"]


def rendered(text, stage="dev"):
    """What the deploy workflow makes of a placeholder-bearing text."""
    return text.replace("{{STAGE}}", stage).replace("{{AWS_REGION}}", "eu-west-1")


def test_the_collector_receives_what_enc_sends():
    config = yaml.safe_load(rendered(env_of(container("adot-collector"))["AOT_CONFIG_CONTENT"]))
    otlp = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert env_of(container())["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{otlp}"
    scrape = config["receivers"]["prometheus"]["config"]["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and "/metrics" in openapi_paths()
    port = container()["portMappings"][0]["containerPort"]
    assert scrape["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"]
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["awsxray"]
    assert pipelines["metrics"]["exporters"] == ["awsemf"]
    service = resources("service")
    log_group = sub(service["MetricsLogGroup"]["Properties"]["LogGroupName"], Stage="dev")
    assert config["exporters"]["awsemf"]["log_group_name"] == log_group


# Consistency between the pieces.

def test_container_name_and_port_agree_everywhere():
    enc = container()
    name, port = enc["name"], enc["portMappings"][0]["containerPort"]
    assert env_of(enc)["ENC_LISTEN"] == f"0.0.0.0:{port}"
    appspec = yaml.safe_load((ROOT / "appspec.yaml").read_text())
    info = appspec["Resources"][0]["TargetService"]["Properties"]["LoadBalancerInfo"]
    assert (info["ContainerName"], info["ContainerPort"]) == (name, port)
    service = resources("service")
    binding = service["Service"]["Properties"]["LoadBalancers"][0]
    assert (binding["ContainerName"], binding["ContainerPort"]) == (name, port)
    first = service["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert (first["Name"], first["PortMappings"][0]["ContainerPort"]) == (name, port)
    for tg in ("BlueTargetGroup", "GreenTargetGroup"):
        assert service[tg]["Properties"]["Port"] == port
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {port}" in dockerfile and f"ENC_LISTEN=0.0.0.0:{port}" in dockerfile


def variables_enc_reads():
    help_text = run(BIN, "--help").stdout
    names = set(re.findall(r"\[env: (\w+)[=\]]", help_text)) | set(re.findall(r"\b(RUST_LOG)\b", help_text))
    for source in (ROOT / "src").rglob("*.rs"):
        names |= set(re.findall(r'env::var\("([A-Z0-9_]+)"\)', source.read_text()))
        names |= set(re.findall(r'"(OTEL_[A-Z0-9_]+)"', source.read_text()))
    return names


def test_every_variable_the_task_sets_is_read_by_enc():
    known = variables_enc_reads()
    assert {"ENC_LISTEN", "ENC_STORE", "ENC_TABLE_PREFIX", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= known
    set_by_taskdef = set(env_of(container())) | {s["name"] for s in container()["secrets"]}
    assert set_by_taskdef - known == set()
    first = resources("service")["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    names = {e["Name"] for e in first["Environment"] if "Name" in e}
    names |= {e["Fn::If"][1]["Name"] for e in first["Environment"] if "Fn::If" in e}
    names |= {s["Name"] for s in first["Secrets"]}
    assert names - known == set()


def test_data_stack_tables_are_what_enc_defines():
    printed = run(BIN, "dynamodb", "tables", env={"ENC_TABLE_PREFIX": "enc-dev-"})
    assert printed.returncode == 0, printed.stderr
    expected = {t["TableName"]: t for t in json.loads(printed.stdout)}
    tables = resources("data", "AWS::DynamoDB::Table")
    declared = {sub(t["Properties"]["TableName"], Stage="dev"): t["Properties"] for t in tables.values()}
    assert set(declared) == set(expected)

    def keys(schema):
        return [(k["AttributeName"], k["KeyType"]) for k in schema]

    for name, table in expected.items():
        props = declared[name]
        assert props["BillingMode"] == table["BillingMode"]
        assert keys(props["KeySchema"]) == keys(table["KeySchema"])
        attrs = lambda defs: sorted((a["AttributeName"], a["AttributeType"]) for a in defs)  # noqa: E731
        assert attrs(props["AttributeDefinitions"]) == attrs(table["AttributeDefinitions"])
        gsis = lambda list_: sorted(  # noqa: E731
            (g["IndexName"], tuple(keys(g["KeySchema"])), g["Projection"]["ProjectionType"]) for g in list_)
        assert gsis(props.get("GlobalSecondaryIndexes", [])) == gsis(table.get("GlobalSecondaryIndexes", []))
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["DeletionProtectionEnabled"] == {"Fn::If": ["IsProd", True, False]}
    ttl = declared["enc-dev-history"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}, "history expires by TTL"
    assert all("TimeToLiveSpecification" not in p for n, p in declared.items() if n != "enc-dev-history")


# The DynamoDB calls the service makes (src/store/dynamodb, but for tables.rs, which only the
# `enc dynamodb` commands use), as the IAM actions they need.
SDK_CALLS = {
    "get_item": "dynamodb:GetItem",
    "transact_get_items": "dynamodb:GetItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "batch_get_item": "dynamodb:BatchGetItem",
}
TRANSACTION_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def test_the_task_role_allows_exactly_the_dynamodb_calls_enc_makes():
    sources = [p for p in (ROOT / "src/store/dynamodb").glob("*.rs") if p.name != "tables.rs"]
    code = "\n".join(p.read_text() for p in sources)
    calls = set(re.findall(r"\.client\s*\.(\w+)\(\)", code))
    assert calls, "no SDK calls found: has the client moved?"
    unknown = calls - set(SDK_CALLS) - {"transact_write_items"}
    assert not unknown, f"map these calls to IAM actions: {unknown}"
    needed = {SDK_CALLS[c] for c in calls if c in SDK_CALLS}
    if "transact_write_items" in calls:
        needed |= {a for b, a in TRANSACTION_ACTIONS.items() if re.search(rf"\b{b}::builder\(", code)}
    role = resources("service")["TaskRole"]["Properties"]
    granted = {}
    for policy in role["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            for action in [actions] if isinstance(actions, str) else actions:
                if action.startswith("dynamodb:"):
                    resources_ = statement["Resource"]
                    resources_ = resources_ if isinstance(resources_, list) else [resources_]
                    granted.setdefault(action, set()).update(sub(r, Stage="dev") for r in resources_)
    assert set(granted) == needed, f"granted {sorted(granted)}, needed {sorted(needed)}"
    tables = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/enc-dev-"
    assert granted["dynamodb:Scan"] == {tables + t for t in ("node_groups", "nodes", "facts")}, \
        "Scan only groups, nodes and facts"
    assert granted["dynamodb:BatchGetItem"] == {tables + "views", tables + "facts"}, \
        "batch reads of views and facts only"


def test_health_checks_use_routes_that_exist():
    paths = openapi_paths() | {"/api-docs/openapi.json"}  # the document itself
    service = resources("service")
    for tg in ("BlueTargetGroup", "GreenTargetGroup"):
        # Liveness, not readiness: a DynamoDB brown-out must not mark every task unhealthy.
        assert service[tg]["Properties"]["HealthCheckPath"] == "/healthz"
    assert "/readyz" in paths and "/healthz" in paths
    assert run(BIN, "healthcheck", "--help").returncode == 0
    code = resources("deploy")["SmokeTestFunction"]["Properties"]["Code"]["ZipFile"]
    for path in re.findall(r'\("(/[^"?]*)', code):
        template_path = re.sub(r"/nodes/[^/]+/classification", "/nodes/{unique_name}/classification", path)
        assert template_path in paths, path


def default_of(flag):
    """The default `enc --help` shows for a flag."""
    found = re.search(rf"--{flag} .*?\[default: (\d+)\]", run(BIN, "--help").stdout, re.S)
    assert found, f"enc --help shows no default for --{flag}"
    return int(found.group(1))


def test_shutdown_timings_line_up():
    # ECS stops a task of a service behind a load balancer in this order: it deregisters the
    # target and the load balancer drains it (new requests go elsewhere, those in flight get
    # up to the deregistration delay), then it sends SIGTERM, then after stopTimeout SIGKILL.
    # So draining must outlast enc's request timeout, and stopTimeout enc's grace period.
    grace = int(env_of(container())["ENC_SHUTDOWN_GRACE_SECONDS"])
    assert container()["stopTimeout"] > grace, "ECS must wait longer than enc's grace period"
    first = resources("service")["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    environment = {e.get("Name"): e.get("Value") for e in first["Environment"]}
    assert int(environment["ENC_SHUTDOWN_GRACE_SECONDS"]) == grace
    assert first["StopTimeout"] == container()["stopTimeout"]
    for env in (env_of(container()), environment):
        request_timeout = int(env.get("ENC_REQUEST_TIMEOUT_SECONDS", default_of("request-timeout-seconds")))
        for tg in ("BlueTargetGroup", "GreenTargetGroup"):
            attributes = resources("service")[tg]["Properties"]["TargetGroupAttributes"]
            delay = int(next(a["Value"] for a in attributes if a["Key"] == "deregistration_delay.timeout_seconds"))
            assert delay >= request_timeout, f"{tg} drains for {delay} s; a request may take {request_timeout} s"


def test_enc_keeps_idle_connections_longer_than_the_load_balancer():
    # The ALB reuses an idle connection to a target until its own idle timeout: if enc closed
    # one first, a request sent on it as it closes would get a 502. AWS asks targets for a
    # keep-alive above the balancer's idle timeout.
    help_text = run(BIN, "--help").stdout
    default = re.search(r"--keep-alive-seconds.*?\[env: ENC_KEEP_ALIVE_SECONDS=?\]\s*\[default: (\d+)\]", help_text, re.S)
    assert default, "enc --help does not show the keep-alive's default"
    for environment in (env_of(container()), {e.get("Name"): e.get("Value") for e in
                        resources("service")["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]}):
        keep_alive = int(environment.get("ENC_KEEP_ALIVE_SECONDS", default.group(1)))
        attributes = resources("service")["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]
        idle = int(next(a["Value"] for a in attributes if a["Key"] == "idle_timeout.timeout_seconds"))
        assert idle < keep_alive, (idle, keep_alive)
        header = int(environment.get("ENC_HEADER_TIMEOUT_SECONDS", 10))
        assert header < idle, "a request's head must still be cut well before the connection idles out"


def test_appspec_hook_is_the_deploy_stacks_lambda():
    appspec = yaml.safe_load((ROOT / "appspec.yaml").read_text())
    hook = appspec["Hooks"][0]["AfterAllowTestTraffic"].replace("{{STAGE}}", "dev")
    function = resources("deploy")["SmokeTestFunction"]["Properties"]["FunctionName"]
    assert hook == sub(function, Stage="dev")
    group = resources("deploy")["DeploymentGroup"]["Properties"]
    assert group["DeploymentStyle"] == {"DeploymentType": "BLUE_GREEN", "DeploymentOption": "WITH_TRAFFIC_CONTROL"}
    assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]


ALARM_DIMENSIONS = {
    "AWS/ApplicationELB": {"LoadBalancer", "TargetGroup", "AvailabilityZone"},
    "AWS/ECS": {"ClusterName", "ServiceName"},
    "AWS/DynamoDB": {"TableName", "Operation", "GlobalSecondaryIndexName"},
    "AWS/Lambda": {"FunctionName"},
}


def alarm_metrics(props):
    if "MetricName" in props:
        yield props["Namespace"], props["MetricName"], props.get("Dimensions", [])
    for metric in props.get("Metrics", []):
        if "MetricStat" in metric:
            m = metric["MetricStat"]["Metric"]
            yield m["Namespace"], m["MetricName"], m.get("Dimensions", [])


def test_alarms_use_the_dimensions_their_metrics_have():
    alarms = resources("observability", "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 6
    imports = {"LoadBalancer": "lb-full-name", "TargetGroup": "tg-full-name"}
    # enc's own metrics: the dimension sets the collector declares for each (taskdef.json),
    # and the logged-errors metric filter's, which has none.
    config = env_of(container("adot-collector"))["AOT_CONFIG_CONTENT"]
    declared = {"logged_errors": [set()]}
    for dims, selectors in re.findall(r"- dimensions: (\[\[.*?\]\])\n\s+metric_name_selectors: \[(.*?)\]", config):
        sets = [set(filter(None, (d.strip() for d in group.split(",")))) for group in re.findall(r"\[([^\[\]]*)\]", dims)]
        for selector in selectors.split(","):
            declared[selector.strip()] = sets
    for name, alarm in alarms.items():
        for namespace, metric, dimensions in alarm_metrics(alarm["Properties"]):
            names = {d["Name"] for d in dimensions}
            if isinstance(namespace, dict):
                assert sub(namespace) == "enc/${Stage}", f"{name}: {namespace}"
                assert names in declared[metric], f"{name}: {metric} has {names}, declared {declared[metric]}"
                continue
            assert names and names <= ALARM_DIMENSIONS[namespace], f"{name}: {metric} {names}"
            if "TargetGroup" in names:
                assert "LoadBalancer" in names, f"{name}: target group metrics need LoadBalancer too"
            for d in dimensions:
                if d["Name"] in imports:
                    exported = json.dumps(d["Value"])
                    assert imports[d["Name"]] in exported, f"{name}: {d['Name']} must be the full name"
    outputs = template("service")["Outputs"]
    assert outputs["LoadBalancerFullName"]["Value"] == {"Fn::GetAtt": ["LoadBalancer", "LoadBalancerFullName"]}
    deploy_alarms = resources("deploy")["DeploymentGroup"]["Properties"]["AlarmConfiguration"]["Alarms"]
    defined = {sub(a["Properties"]["AlarmName"], Stage="dev"): a["Properties"] for a in alarms.values()}
    rolling_back = {sub(a["Name"], Stage="dev") for a in deploy_alarms}
    assert rolling_back <= set(defined)
    # What a bad release most likely does: fail requests, lose every healthy task, break the hook.
    assert {"enc-dev-error-rate", "enc-dev-elb-5xx", "enc-dev-no-healthy-hosts",
            "enc-dev-smoke-test-errors", "enc-dev-target-5xx"} <= rolling_back
    rate = defined["enc-dev-error-rate"]
    expression = next(m["Expression"] for m in rate["Metrics"] if m.get("ReturnData"))
    assert "errors / requests" in expression, "a rate, not a count"
    healthy = defined["enc-dev-no-healthy-hosts"]
    assert healthy["ComparisonOperator"] == "LessThanThreshold" and healthy["Threshold"] == 1
    hook = defined["enc-dev-smoke-test-errors"]["Dimensions"][0]["Value"]
    assert sub(hook, Stage="dev") == sub(resources("deploy")["SmokeTestFunction"]["Properties"]["FunctionName"], Stage="dev")


def test_each_stage_writes_and_watches_its_own_metrics():
    # The collector writes enc's metrics under a namespace of the stage's own, and every
    # dashboard search and alarm reads that stage's (or AWS's, by the stage's resource names).
    config = env_of(container("adot-collector"))["AOT_CONFIG_CONTENT"]
    assert re.findall(r"^\s*namespace: (\S+)$", config, re.M) == ["enc/{{STAGE}}"]
    observability = template("observability")
    body = observability["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    text = json.dumps(body)
    searches = re.findall(r"SEARCH\('\{([^,]+),", text)
    assert searches and set(searches) == {"enc/${Stage}"}, searches
    for name, alarm in resources("observability", "AWS::CloudWatch::Alarm").items():
        for namespace in re.findall(r'"Namespace": "([^"]+)"', json.dumps(alarm)):
            assert namespace.startswith("AWS/") or namespace == "enc/${Stage}", (name, namespace)
    # Every AWS metric a widget shows is the stage's: a dimension value made of the stage or of
    # what the stage's stacks export (its load balancer, cluster, service).
    source, stage_values = body["Fn::Sub"]
    assert set(stage_values) == {"LoadBalancer", "Cluster", "Service"}
    for name, value in stage_values.items():
        assert "${Stage}" in json.dumps(value), f"{name} is not the stage's"
    shown = 0
    for widget in json.loads(source)["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            if isinstance(metric[0], str) and metric[0].startswith("AWS/"):
                shown += 1
                assert any("${" in str(v) for v in metric[2:]), f"{widget['properties']['title']}: {metric[:4]}"
    assert shown > 20


def test_every_table_and_index_is_watched_for_throttles_and_every_alarm_is_on_the_panel():
    printed = json.loads(run(BIN, "dynamodb", "tables", env={"ENC_TABLE_PREFIX": "enc-${Stage}-"}).stdout)
    wanted = {(t["TableName"], g) for t in printed
              for g in [None] + [i["IndexName"] for i in t.get("GlobalSecondaryIndexes", [])]}
    alarms = resources("observability", "AWS::CloudWatch::Alarm")
    for kind in ("ReadThrottleEvents", "WriteThrottleEvents"):
        alarmed = set()
        for alarm in alarms.values():
            for query in alarm["Properties"].get("Metrics", []):
                metric = query.get("MetricStat", {}).get("Metric", {})
                if metric.get("MetricName") == kind:
                    dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
                    alarmed.add((sub(dims["TableName"]), dims.get("GlobalSecondaryIndexName")))
        assert alarmed == wanted, f"{kind} alarms miss {wanted - alarmed}"
        body = json.dumps(template("observability")["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
        shown = set()
        for found in re.finditer(rf'\[\\"AWS/DynamoDB\\", \\"{kind}\\", \\"TableName\\", \\"([^\\]+)\\"(?:, \\"GlobalSecondaryIndexName\\", \\"([^\\]+)\\")?', body):
            shown.add((found.group(1), found.group(2)))
        assert shown == wanted, f"the {kind} panel misses {wanted - shown}"
    for name, alarm in alarms.items():
        # CloudWatch's limit for a metric-math alarm: 10 metrics.
        read = [q for q in alarm["Properties"].get("Metrics", []) if "MetricStat" in q]
        assert len(read) <= 10, f"{name} reads {len(read)} metrics"
    names = {sub(a["Properties"]["AlarmName"]) for a in alarms.values()}
    panel = set(re.findall(r"alarm:(enc-\$\{Stage\}-[\w-]+)", body))
    assert panel == names, f"the alarm panel misses {names - panel}"
    rollback = {sub(a["Name"]) for a in resources("deploy")["DeploymentGroup"]["Properties"]["AlarmConfiguration"]["Alarms"]}
    listed = template("observability")["Outputs"]["DeploymentAlarmNames"]["Value"]["Fn::Join"][1]
    assert {sub(alarms[r["Ref"]]["Properties"]["AlarmName"]) for r in listed} == rollback


def test_logged_errors_and_bursts_of_refusals_raise_alarms():
    observability = resources("observability")
    filter_ = observability["LoggedErrorsFilter"]["Properties"]
    # The task's own log group, where enc writes JSON lines with a `level` field.
    log_group = resources("service")["LogGroup"]["Properties"]["LogGroupName"] if "LogGroup" in resources("service") else None
    groups = [r["Properties"]["LogGroupName"] for r in resources("service", "AWS::Logs::LogGroup").values()]
    assert filter_["LogGroupName"] in groups and log_group in (None, filter_["LogGroupName"])
    assert filter_["FilterPattern"] == '{ $.level = "ERROR" }'
    assert env_of(container())["ENC_LOG_FORMAT"] == "json"
    metric = filter_["MetricTransformations"][0]
    errors = observability["LoggedErrorsAlarm"]["Properties"]
    assert (errors["Namespace"], errors["MetricName"]) == (metric["MetricNamespace"], metric["MetricName"])
    refused = observability["AuthFailuresAlarm"]["Properties"]
    assert refused["MetricName"] == "http_requests_total" and refused["Dimensions"] == [{"Name": "status", "Value": "401"}]
    for alarm in (errors, refused):
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_dashboard_takes_its_region_from_the_stack():
    body = resources("observability")["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    assert "${AWS::Region}" in body
    assert not re.search(r"\b(us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-\d\b", body), "a region is hard-coded"
    widgets = json.loads(re.sub(r"\$\{[\w:]+\}", "x", body))["widgets"]
    assert len(widgets) >= 8


def test_load_balancer_is_tls_only_and_tasks_are_private():
    service = resources("service")
    for listener in ("HttpsListener", "TestListener"):
        props = service[listener]["Properties"]
        assert props["Protocol"] == "HTTPS" and props["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    redirect = service["HttpListener"]["Properties"]["DefaultActions"][0]
    assert redirect["Type"] == "redirect" and redirect["RedirectConfig"]["Protocol"] == "HTTPS"
    ingress = service["TaskSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [r.get("SourceSecurityGroupId") for r in ingress] == [{"Ref": "LoadBalancerSecurityGroup"}]
    network = service["Service"]["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert "private-subnet-ids" in json.dumps(network["Subnets"])
    assert service["Service"]["Properties"]["DeploymentController"] == {"Type": "CODE_DEPLOY"}


def moto_load_balancer(colours=("blue", "green")):
    """In moto: a load balancer named enc-dev over two subnets, and a target group
    enc-dev-<colour> for each colour; (elbv2 client, balancer ARN, {colour: group ARN})."""
    import boto3
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"eu-west-1{z}")["Subnet"]["SubnetId"]
               for i, z in ((1, "a"), (2, "b"))]
    elbv2 = boto3.client("elbv2")
    lb = elbv2.create_load_balancer(Name="enc-dev", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    groups = {c: elbv2.create_target_group(Name=f"enc-dev-{c}", Protocol="HTTP", Port=8080, VpcId=vpc,
                                           TargetType="ip")["TargetGroups"][0]["TargetGroupArn"] for c in colours}
    return elbv2, lb, groups


def load_inline_code(code, name, tmp_path):
    """A Lambda's inline code as Lambda loads it: written as `index.py` and imported."""
    import importlib.util
    path = tmp_path / "index.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(f"{name}_{id(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolved(value, has_ids):
    """A condition's value with the template's parameters filled in: a list of strings."""
    if isinstance(value, dict) and "Fn::If" in value:
        assert value["Fn::If"][0] == "HasIds"
        value = value["Fn::If"][1 if has_ids else 2]
    values = value if isinstance(value, list) else [value]
    names = {"GitHubOrg": "o", "GitHubRepo": "r", "GitHubOrgId": "11", "GitHubRepoId": "22"}
    return [sub(v, **names) for v in values]


def iam_string_like(pattern, value):
    """IAM's StringLike: case-sensitive, `*` any run of characters, `?` any one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value) is not None


def trust_admits(role, claims, has_ids=False):
    """Whether a role's trust policy lets a GitHub OIDC token with these claims assume it, as
    IAM evaluates it: an Allow statement for sts:AssumeRoleWithWebIdentity whose every
    condition operator holds; within an operator every key; a key with several values holds
    when any of them matches; a claim the token lacks fails its key (no ...IfExists here)."""
    operators = {"StringEquals": str.__eq__, "StringLike": iam_string_like}
    for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
        if statement["Effect"] != "Allow" or statement["Action"] != "sts:AssumeRoleWithWebIdentity":
            continue
        holds = True
        for operator, keys in statement.get("Condition", {}).items():
            assert operator in operators, f"the test does not know IAM's {operator}"
            for key, value in keys.items():
                provider, claim = key.rsplit(":", 1)
                assert provider == "token.actions.githubusercontent.com", key
                given = claims.get(claim)
                if given is None or not any(operators[operator](v, given) for v in resolved(value, has_ids)):
                    holds = False
        if holds:
            return True
    return False


def github_token(repo="o/r", environment=None, ref="refs/heads/main", pull_request=False, aud="sts.amazonaws.com"):
    """The claims of a GitHub Actions OIDC token under the subject template the stacks need
    (repo, context, ref: docs/aws.md): the context is the job's environment, else
    `pull_request` for a pull request's run, else the ref; then the ref itself."""
    context = f"environment:{environment}" if environment else "pull_request" if pull_request else f"ref:{ref}"
    return {"aud": aud, "sub": f"repo:{repo}:{context}:ref:{ref}"}


def test_github_roles_trust_only_their_repository_environment_and_branch():
    roles = resources("github-oidc", "AWS::IAM::Role")
    assert set(roles) == {"BuildRole", "DevDeployRole", "StagingDeployRole", "ProdDeployRole"}
    main, branch, pr = "refs/heads/main", "refs/heads/feature", "refs/pull/7/merge"
    for name, role in roles.items():
        stage = name.removesuffix("DeployRole").lower()
        if name == "BuildRole":
            admitted = [github_token(ref=main)]
            refused = [github_token(ref=branch), github_token(ref=pr, pull_request=True),
                       github_token(environment="prod", ref=main), github_token(ref="refs/tags/v1")]
        else:
            admitted = [github_token(environment=stage, ref=main)]
            refused = [github_token(environment=stage, ref=pr), github_token(ref=main),
                       github_token(environment=stage, ref="refs/tags/v1"),
                       github_token(ref=pr, pull_request=True)]
            # Dev takes any branch of this repository, so that a branch can be tried there;
            # staging and prod only main: a branch's workflow naming their environment fails.
            (admitted if stage == "dev" else refused).append(github_token(environment=stage, ref=branch))
            refused += [github_token(environment=other, ref=main)
                        for other in ("dev", "staging", "prod") if other != stage]
        refused += [github_token(repo="o/other", environment=None if name == "BuildRole" else stage, ref=main),
                    {**admitted[0], "aud": "sigstore"}, {"sub": admitted[0]["sub"]},
                    # The default subject template (no ref) is not enough: the stacks need the ref.
                    {"aud": "sts.amazonaws.com", "sub": admitted[0]["sub"].rsplit(":ref:", 1)[0]}]
        for claims in admitted:
            assert trust_admits(role, claims), f"{name} refuses {claims}"
        for claims in refused:
            assert not trust_admits(role, claims), f"{name} admits {claims}"
        # Once the numeric ids are given, the id-based repository GitHub sends for
        # repositories made since mid-2026 is admitted too, and another repository's is not.
        with_ids = {**admitted[0], "sub": admitted[0]["sub"].replace("repo:o/r:", "repo:o@11/r@22:")}
        assert trust_admits(role, with_ids, has_ids=True) and not trust_admits(role, with_ids)
        other_ids = {**with_ids, "sub": with_ids["sub"].replace("r@22", "r@23")}
        assert not trust_admits(role, other_ids, has_ids=True)
        if name != "BuildRole":
            passed = json.dumps(role["Properties"]["Policies"])
            assert f"role/enc-{stage}-task" in passed and "iam:PassedToService" in passed


def test_the_trust_evaluation_follows_iam():
    assert iam_string_like("a:*", "a:b:c") and iam_string_like("a?c", "abc")
    assert not iam_string_like("a*", "A") and not iam_string_like("a.c", "abc")
    role = {"Properties": {"AssumeRolePolicyDocument": {"Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {"token.actions.githubusercontent.com:aud": ["x", "y"]}}}]}}}
    assert trust_admits(role, {"aud": "y"}) and not trust_admits(role, {"aud": "z"})
    assert not trust_admits(role, {}), "a claim the token lacks fails its condition"


# aws-actions/amazon-ecs-deploy-task-definition v2.6.3 (README.md, "AWS CodeDeploy Support":
# "The minimal permissions require access to CodeDeploy"), for a CODE_DEPLOY service.
DEPLOY_ACTION_NEEDS = {
    "ecs:RegisterTaskDefinition",
    "iam:PassRole",
    "ecs:DescribeServices",
    "codedeploy:GetDeploymentGroup",
    "codedeploy:CreateDeployment",
    "codedeploy:GetDeployment",
    "codedeploy:GetDeploymentConfig",
    "codedeploy:RegisterApplicationRevision",
}
# deploy-stage.yml's own call: the service stack's outputs fill in the task definition.
# deploy-stage.yml's own call: the service stack's outputs fill in the task definition. (The
# deployed image is tagged by the build role, main only: no stage's role writes to ECR.)
WORKFLOW_NEEDS = {"cloudformation:DescribeStacks", "ecr:ListImages"}


def statements(role):
    for policy in role["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            resources_ = statement["Resource"]
            yield (actions if isinstance(actions, list) else [actions],
                   resources_ if isinstance(resources_, list) else [resources_], statement)


def test_deploy_roles_allow_what_the_deploy_action_needs_and_no_more():
    workflow = (ROOT / ".github/workflows/deploy-stage.yml").read_text()
    assert "amazon-ecs-deploy-task-definition@c465972ecbd160473f22e683363b422a5412a3de # v2.6.3" in workflow, \
        "the list above is that version's: check it again when the action moves"
    assert "aws cloudformation describe-stacks" in workflow
    for stage in ("dev", "staging", "prod"):
        role = resources("github-oidc")[f"{stage.capitalize()}DeployRole"]
        granted = {a for actions, _, _ in statements(role) for a in actions}
        assert granted == DEPLOY_ACTION_NEEDS | WORKFLOW_NEEDS, f"{stage}: {sorted(granted ^ (DEPLOY_ACTION_NEEDS | WORKFLOW_NEEDS))}"
        for actions, resources_, statement in statements(role):
            if actions == ["ecr:ListImages"]:
                assert resources_ == [{"Fn::GetAtt": ["Repository", "Arn"]}], "the enc repository only"
                continue
            for resource in resources_:
                arn = sub(resource)
                if actions == ["ecs:RegisterTaskDefinition"]:
                    assert arn == "*", "RegisterTaskDefinition has no resource-level permissions"
                    continue
                assert "*" not in arn.replace("deploymentconfig:*", "").replace(f"enc-{stage}-service/*", ""), arn
                assert f"enc-{stage}" in arn or "deploymentconfig:*" in arn, f"{stage}: {arn}"


def workflow(name):
    return yaml.safe_load((ROOT / ".github/workflows" / name).read_text())


def triggers(document):
    # PyYAML reads the key `on` as True.
    return document.get("on", document.get(True))


def test_nothing_deploys_before_every_test_has_passed():
    ci = workflow("ci.yml")
    jobs = ci["jobs"]
    callers = {name: job for name, job in jobs.items() if job.get("uses") == "./.github/workflows/deploy.yml"}
    assert list(callers) == ["deploy"], "ci.yml calls the deploy workflow once"
    deploy = callers["deploy"]
    # The image job runs on pull requests only: the deploy (on main) cannot wait for it, as a
    # job that needs a skipped job is skipped; on main the deploy builds the image itself.
    image = jobs["image"]
    assert image["if"] == "github.event_name == 'pull_request'"
    build = [s for s in image["steps"] if s.get("uses", "").startswith("docker/build-push-action@")]
    assert len(build) == 1 and build[0]["with"]["push"] is False, "a pull request's image is never pushed"
    assert "id-token" not in json.dumps(image.get("permissions", {})), "nor may it reach AWS"
    others = set(jobs) - {"deploy", "image"}
    assert {"test", "release-build", "supply-chain"} <= others
    assert set(deploy["needs"]) == others, "the deploy waits for every other job"
    # Runs on main never queue behind each other (one may wait days for a prod approval):
    # deployments queue per stage in the deploy job, never cancelled.
    group = ci["concurrency"]["group"]
    assert "github.run_id" in group and "github.event_name == 'pull_request'" in group
    stage_job = workflow("deploy-stage.yml")["jobs"]["deploy"]
    assert stage_job["concurrency"] == {"group": "enc-deploy-${{ inputs.stage }}", "cancel-in-progress": False}
    assert deploy["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    # The deploy workflows start only when called: no push, schedule or manual run of their own.
    assert set(triggers(workflow("deploy.yml"))) == {"workflow_call"}
    assert set(triggers(workflow("deploy-stage.yml"))) == {"workflow_call"}
    callers_of = {}
    for path in (ROOT / ".github/workflows").glob("*.yml"):
        for job in workflow(path.name)["jobs"].values():
            if job.get("uses", "").startswith("./"):
                callers_of.setdefault(job["uses"], set()).add(path.name)
    assert callers_of == {"./.github/workflows/deploy.yml": {"ci.yml"},
                          "./.github/workflows/deploy-stage.yml": {"deploy.yml"}}
    stages = workflow("deploy.yml")["jobs"]
    assert stages["dev"]["needs"] == "build" and "dev" in stages["staging"]["needs"]
    assert "staging" in stages["prod"]["needs"]


def test_actions_are_pinned_by_commit_and_images_by_digest():
    for path in (ROOT / ".github/workflows").glob("*.yml"):
        for line in path.read_text().splitlines():
            used = re.search(r"uses:\s*(\S+)", line)
            if not used or used.group(1).startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", used.group(1)), f"{path.name}: {line.strip()}"
            assert re.search(r"# v?\d+\.\d+\.\d+$", line), f"{path.name}: say which version: {line.strip()}"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            assert re.search(r"@sha256:[0-9a-f]{64}\b", line), line
    for c in taskdef()["containerDefinitions"]:
        assert c["image"] == "{{IMAGE}}" or re.search(r"@sha256:[0-9a-f]{64}$", c["image"]), c["name"]
    dependabot = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
    assert {u["package-ecosystem"] for u in dependabot["updates"]} == {"github-actions", "docker", "cargo"}


def test_cargo_deny_runs_in_ci_with_the_repositorys_config():
    import tomllib
    config = tomllib.loads((ROOT / "deny.toml").read_text())
    assert config["sources"]["unknown-git"] == "deny" and config["sources"]["unknown-registry"] == "deny"
    assert "Apache-2.0" in config["licenses"]["allow"] and "GPL-3.0" not in config["licenses"]["allow"]
    steps = workflow("ci.yml")["jobs"]["supply-chain"]["steps"]
    deny = next(s for s in steps if s.get("uses", "").startswith("EmbarkStudios/cargo-deny-action@"))
    assert set(deny["with"]["command"].split()) == {"check", "advisories", "licenses", "bans", "sources"}


def live_target(value):
    """The target group a listener action names: the ProductionTargetGroup choice."""
    return value == {"Fn::If": ["ProductionIsGreen", {"Ref": "GreenTargetGroup"}, {"Ref": "BlueTargetGroup"}]}


def test_the_service_stack_never_fights_codedeploy():
    service = resources("service")
    td = service["TaskDefinition"]["Properties"]
    assert sub(td["Family"], Stage="dev") == "enc-dev-bootstrap", "a family of its own"
    assert taskdef()["family"] == "enc-{{STAGE}}", "the deploy workflow's family"
    # The service names the family, never the resource: no change here reaches the service.
    assert sub(service["Service"]["Properties"]["TaskDefinition"], Stage="dev") == "enc-dev-bootstrap"
    assert "TaskDefinition" in service["Service"]["DependsOn"]
    for listener in ("HttpsListener", "TestListener"):
        action = service[listener]["Properties"]["DefaultActions"][0]
        assert live_target(action["TargetGroupArn"]), f"{listener} follows ProductionTargetGroup"
    for rule in resources("service", "AWS::ElasticLoadBalancingV2::ListenerRule").values():
        forward = [a for a in rule["Properties"]["Actions"] if a["Type"] == "forward"]
        assert forward and all(live_target(a["TargetGroupArn"]) for a in forward)
    assert "ProductionTargetGroup" in (ROOT / "docs" / "aws.md").read_text()
    # No property of the service takes a parameter or another resource's changing value: any
    # change to it makes CloudFormation send a whole UpdateService, which ECS refuses for a
    # CODE_DEPLOY service. Capacity moves with the scalable target instead.
    properties = json.dumps(service["Service"]["Properties"])
    parameters = set(template("service")["Parameters"]) - {"Stage"}
    assert not [p for p in parameters if f'"Ref": "{p}"' in properties or "${" + p + "}" in properties], properties
    assert service["Service"]["Properties"]["DesiredCount"] == 2
    assert service["ScalableTarget"]["Properties"]["MinCapacity"] == {"Ref": "DesiredCount"}


def test_the_load_balancer_logs_to_a_private_bucket_and_reaches_only_the_tasks():
    service = resources("service")
    attributes = {a["Key"]: a["Value"] for a in service["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]}
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.bucket"] == {"Ref": "AccessLogBucket"}
    bucket = service["AccessLogBucket"]["Properties"]
    # SSE-S3: the only encryption access log delivery supports (AWS's "Enable access logs").
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"]
    policy = service["AccessLogBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in policy)
    writes = [s for s in policy if s["Effect"] == "Allow"]
    assert [s["Action"] for s in writes] == ["s3:PutObject"], "log delivery may only write"
    skipped = {k["id"]: k["comment"] for k in service["LoadBalancer"].get("Metadata", {}).get("checkov", {}).get("skip", [])}
    assert "CKV_AWS_91" not in skipped, "access logging is on: no skip for it"
    # No default allow-all egress: the tasks' port, and the identity provider only with sign-in.
    group = service["LoadBalancerSecurityGroup"]["Properties"]
    assert group["SecurityGroupEgress"] == [{"IpProtocol": "-1", "CidrIp": "127.0.0.1/32",
                                             "Description": "nothing (replaces the default allow-all)"}]
    egress = resources("service", "AWS::EC2::SecurityGroupEgress")
    to_lb = {k: v for k, v in egress.items() if v["Properties"]["GroupId"] == {"Ref": "LoadBalancerSecurityGroup"}}
    assert set(to_lb) == {"LoadBalancerToTasks", "LoadBalancerToIdentityProvider"}
    assert to_lb["LoadBalancerToTasks"]["Properties"]["DestinationSecurityGroupId"] == {"Ref": "TaskSecurityGroup"}
    assert to_lb["LoadBalancerToTasks"]["Properties"]["FromPort"] == 8080 == to_lb["LoadBalancerToTasks"]["Properties"]["ToPort"]
    assert to_lb["LoadBalancerToIdentityProvider"]["Condition"] == "HasOidc"
    assert to_lb["LoadBalancerToIdentityProvider"]["Properties"]["FromPort"] == 443


def test_image_layers_and_dynamodb_stay_off_the_nat_gateways():
    endpoints = resources("network", "AWS::EC2::VPCEndpoint")
    services = {e["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1] for e in endpoints.values()}
    assert {"s3", "dynamodb"} <= services
    for endpoint in endpoints.values():
        assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
        assert len(endpoint["Properties"]["RouteTableIds"]) == 2, "both private route tables"


def test_the_image_context_holds_only_what_the_dockerfile_copies():
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*", "everything is left out unless let in"
    let_in = {line[1:].rstrip("/") for line in ignore[1:]}
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied.update(line.split()[1:-1])
    assert copied == let_in, f"the Dockerfile copies {copied}, the context lets in {let_in}"


def test_the_repository_keeps_the_images_each_stage_runs_or_may_roll_back_to():
    policy = json.loads(resources("github-oidc")["Repository"]["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])
    rules = sorted(policy["rules"], key=lambda r: r["rulePriority"])
    # ECR: an image a higher-priority rule's tags select is never expired by a lower one, and
    # a rule of tagStatus any comes last. So each stage's deployed images are protected by
    # their own rule, whatever the other stages or the builds push.
    assert [r["selection"].get("tagPrefixList") for r in rules] == [
        ["deployed-prod-"], ["deployed-staging-"], ["deployed-dev-"], None]
    assert rules[-1]["selection"]["tagStatus"] == "any"
    for rule in rules[:-1]:
        assert rule["selection"]["countType"] == "imageCountMoreThan" and rule["selection"]["countNumber"] >= 10
    jobs = workflow("deploy-stage.yml")["jobs"]
    # Tagged only once the deployment succeeded, by the build role (main only, in no
    # environment): a branch's workflow may assume dev's role, never write to the repository.
    keep = jobs["keep"]
    assert keep["needs"] == "deploy" and "environment" not in keep
    assert [s["with"]["role-to-assume"] for s in keep["steps"] if "role-to-assume" in s.get("with", {})] == ["${{ vars.AWS_BUILD_ROLE_ARN }}"]
    tag = [s for s in keep["steps"] if "put-image" in s.get("run", "")]
    assert len(tag) == 1 and tag[0]["env"]["TAG"] == "deployed-${{ inputs.stage }}-${{ github.sha }}"
    assert not any("put-image" in s.get("run", "") for s in jobs["deploy"]["steps"])
    # And only what it deployed: an older commit arriving after a newer one's deployment
    # (runs reach the stage in the order their tests finish) is not deployed over it.
    assert keep["if"] == "needs.deploy.outputs.deployed == 'true'"
    steps = jobs["deploy"]["steps"]
    order = next(i for i, s in enumerate(steps) if s.get("id") == "order")
    assert "git merge-base --is-ancestor" in steps[order]["run"]
    assert steps[0]["with"]["fetch-depth"] == 0, "the order needs the history"
    for step in steps[order + 1:]:
        assert step.get("if") == "steps.order.outputs.deploy == 'true'", step
    for name, role in resources("github-oidc", "AWS::IAM::Role").items():
        writes = {a for actions, _, _ in statements(role) for a in actions if a in ("ecr:PutImage", "ecr:UploadLayerPart")}
        assert bool(writes) == (name == "BuildRole"), f"{name} writes to the repository: {writes}"


def test_only_the_smoke_test_reaches_the_test_listener():
    service = resources("service")
    ingress = service["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    test_rules = [r for r in ingress if r["FromPort"] <= 8443 <= r["ToPort"]]
    assert test_rules == [r for r in test_rules if r.get("SourceSecurityGroupId") == {"Ref": "SmokeTestSecurityGroup"}]
    assert len(test_rules) == 1
    for name in ("SmokeTestThroughNatA", "SmokeTestThroughNatB"):
        rule = service[name]
        assert rule["Condition"].startswith("IsInternetFacing"), "through NAT only when internet-facing"
        assert "/32" in json.dumps(rule["Properties"]["CidrIp"])
    function = resources("deploy")["SmokeTestFunction"]["Properties"]
    assert "smoke-test-sg-id" in json.dumps(function["VpcConfig"]["SecurityGroupIds"])


def test_sign_in_and_mutual_tls_are_wired_when_asked_for():
    service = resources("service")
    rules = resources("service", "AWS::ElasticLoadBalancingV2::ListenerRule")
    sign_in = rules["SignInRule"]["Properties"]
    assert rules["SignInRule"]["Condition"] == "HasOidc"
    paths = sign_in["Conditions"][0]["PathPatternConfig"]["Values"]
    assert {"/metrics-form", "/metrics-form/*", "/swagger-ui", "/swagger-ui/*"} == set(paths)
    oidc = next(a for a in sign_in["Actions"] if a["Type"] == "authenticate-oidc")["AuthenticateOidcConfig"]
    assert "resolve:secretsmanager" in json.dumps(oidc["ClientSecret"]), "the client secret is never a parameter value"
    bearer = rules["BearerTokenRule"]["Properties"]
    assert bearer["Priority"] < sign_in["Priority"], "token clients never meet the sign-in"
    # enc trusts the sign-in data only when this load balancer signed it.
    first = service["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    signer = next(e["Fn::If"] for e in first["Environment"] if "Fn::If" in e and e["Fn::If"][1]["Name"] == "ENC_ALB_OIDC_SIGNER")
    assert signer[0] == "HasOidc" and signer[1]["Value"] == {"Ref": "LoadBalancer"}
    assert template("service")["Outputs"]["AlbOidcSigner"]["Value"] == {"Fn::If": ["HasOidc", {"Ref": "LoadBalancer"}, ""]}
    mutual = service["HttpsListener"]["Properties"]["MutualAuthentication"]["Fn::If"]
    assert mutual[0] == "HasMutualTls" and mutual[1]["Mode"] == "verify"
    assert mutual[1]["TrustStoreArn"] == {"Ref": "PuppetTrustStore"}


def test_ci_runs_the_readme_test_command_and_the_image_build():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    runs = [step.get("run", "") for job in ci["jobs"].values() for step in job.get("steps", [])]
    assert "scripts/test" in runs and "scripts/build-release" in runs
    assert "scripts/test" in (ROOT / "README.md").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RUN scripts/build-release" in dockerfile
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/enc"\]', dockerfile, re.M), "exec form"
    assert re.search(r"^USER \d+:\d+", dockerfile, re.M), "non-root"
    deploy = (ROOT / ".github/workflows/deploy-stage.yml").read_text()
    assert "cancel-in-progress: false" in deploy and "environment: ${{ inputs.stage }}" in deploy


# The stacks in the order docs/aws.md creates them.

def documented_order():
    page = (ROOT / "docs" / "aws.md").read_text()
    created = page[page.index("## From a new AWS account"):page.index("## Changing the service stack later")]
    return re.findall(r"--template-file cloudformation/([\w-]+)\.yaml", created)


def exports(stack, stage="dev"):
    """Each export's name and the condition it is made under."""
    outputs = template(stack).get("Outputs", {})
    return {sub(o["Export"]["Name"], Stage=stage): o.get("Condition")
            for o in outputs.values() if "Export" in o}


def imports(node, condition=None):
    """Every ImportValue name in a template, with the condition of the resource holding it."""
    if isinstance(node, dict):
        if "Fn::ImportValue" in node:
            yield sub(node["Fn::ImportValue"], Stage="dev"), condition
            return
        for key, value in node.items():
            yield from imports(value, condition)
    elif isinstance(node, list):
        for value in node:
            yield from imports(value, condition)


def condition_implies(conditions, name, wanted):
    """Whether condition `name` holds only where the condition defined as `wanted` holds."""
    definition = conditions[name]
    if definition == wanted:
        return True
    if isinstance(definition, dict) and "Fn::And" in definition:
        return any(condition_implies(conditions, c["Condition"], wanted)
                   for c in definition["Fn::And"] if isinstance(c, dict) and "Condition" in c)
    return False


def test_every_import_is_exported_by_a_stack_made_before_it():
    order = documented_order()
    assert sorted(order) == sorted(STACKS), f"docs/aws.md creates every stack once: {order}"
    made = {}
    for stack in order:
        body = template(stack)
        conditions = body.get("Conditions", {})
        for name, resource in body["Resources"].items():
            for value, _ in imports(resource.get("Properties", {})):
                assert value in made, f"{stack}.{name} imports {value}, which no earlier stack exports"
                exporter, export_condition = made[value]
                if export_condition:
                    wanted = template(exporter)["Conditions"][export_condition]
                    held = resource.get("Condition")
                    assert held and condition_implies(conditions, held, wanted), \
                        f"{stack}.{name} imports {value}, exported only under {export_condition}"
        for value, condition in exports(stack).items():
            made[value] = (stack, condition)


def test_moto_creates_the_stacks_it_can_with_the_exports_the_others_import(monkeypatch):
    """moto 5.2.5 creates the GitHub and data stacks. It cannot create the others: it does not
    evaluate Fn::Cidr (network), has no CloudFormation attributes for target groups or
    LoadBalancerFullName (service), and so the later stacks miss their imports. What those
    stacks import is checked statically above."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    parameters = {"github-oidc": {"GitHubOrg": "o", "GitHubRepo": "r"}, "data": {"Stage": "dev"}}
    with mock_aws():
        cloudformation = boto3.client("cloudformation")
        for stack, values in parameters.items():
            cloudformation.create_stack(
                StackName=f"enc-{stack}", TemplateBody=(ROOT / "cloudformation" / f"{stack}.yaml").read_text(),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
                Capabilities=["CAPABILITY_NAMED_IAM"])
            made = cloudformation.describe_stacks(StackName=f"enc-{stack}")["Stacks"][0]
            assert made["StackStatus"] == "CREATE_COMPLETE", made.get("StackStatusReason")
        exported = {e["Name"] for e in cloudformation.list_exports()["Exports"]}
        assert exported == set(exports("data")), "the data stack exports what it declares"
        tables = boto3.client("dynamodb").list_tables()["TableNames"]
        printed = json.loads(run(BIN, "dynamodb", "tables", env={"ENC_TABLE_PREFIX": "enc-dev-"}).stdout)
        assert sorted(tables) == sorted(t["TableName"] for t in printed)
        roles = {r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]}
        assert {"enc-github-build", "enc-github-deploy-dev", "enc-github-deploy-prod"} <= roles


def test_the_docs_classification_workflow_passes_actionlint(tmp_path):
    # The GitHub Actions example for classification as code (docs/as-code.md): pull requests
    # plan with a plan token, only main applies, with the write token of an environment.
    page = (ROOT / "docs" / "as-code.md").read_text()
    start = page.index("```yaml\nname: classification\n") + len("```yaml\n")
    example = page[start:page.index("```", start)]
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "classification.yml").write_text(example)
    result = subprocess.run([tool("actionlint"), "-no-color", "classification.yml"], cwd=workflows,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    document = yaml.safe_load(example)
    assert "secrets.ENC_PLAN_TOKEN" in str(document["jobs"]["plan"])
    assert "ENC_WRITE_TOKEN" not in str(document["jobs"]["plan"]), "a pull request never holds the write token"
    assert document["jobs"]["apply"]["environment"] == "classification"


def test_stage_values_reads_the_image_and_the_live_target_group_and_never_guesses(monkeypatch, capsys):
    """scripts/stage-values against moto: the newest image by digest from the repository the
    GitHub stack made, and the target group the HTTPS listener sends traffic to; with no image,
    or a listener sending traffic to no enc group, it fails instead of guessing."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("stage_values", str(ROOT / "scripts" / "stage-values"))
    spec = importlib.util.spec_from_loader("stage_values", loader)
    stage_values = importlib.util.module_from_spec(spec)
    loader.exec_module(stage_values)

    def values(*args):
        """stage-values' exit status and the assignments it printed."""
        status = stage_values.main(["stage-values", *args])
        return status, capsys.readouterr().out.splitlines()

    with mock_aws():
        cloudformation = boto3.client("cloudformation")
        cloudformation.create_stack(
            StackName="enc-github", TemplateBody=(ROOT / "cloudformation" / "github-oidc.yaml").read_text(),
            Parameters=[{"ParameterKey": "GitHubOrg", "ParameterValue": "o"}, {"ParameterKey": "GitHubRepo", "ParameterValue": "r"}],
            Capabilities=["CAPABILITY_NAMED_IAM"])
        assert values("image") == (1, []), "no image pushed yet"
        ecr = boto3.client("ecr")
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                               "config": {"digest": "sha256:" + "1" * 64, "size": 1, "mediaType": "application/vnd.docker.container.image.v1+json"},
                               "layers": []})
        ecr.put_image(repositoryName="enc", imageManifest=manifest, imageTag="c1")
        elbv2, lb, groups = moto_load_balancer(("blue", "green", "other"))

        def service_stack(live):
            listener = elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80 + len(elbv2.describe_listeners(LoadBalancerArn=lb)["Listeners"]),
                                             DefaultActions=[{"Type": "forward", "TargetGroupArn": groups[live]}])["Listeners"][0]["ListenerArn"]
            body = {"Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
                    "Outputs": {"HttpsListenerArn": {"Value": listener}}}
            try:
                cloudformation.delete_stack(StackName="enc-dev-service")
            except Exception:
                pass
            cloudformation.create_stack(StackName="enc-dev-service", TemplateBody=json.dumps(body))

        for live in ("green", "blue"):
            service_stack(live)
            assert values("live-target-group", "dev") == (0, [live])
        digest = ecr.describe_images(repositoryName="enc")["imageDetails"][0]["imageDigest"]
        status, printed = values("image")
        assert status == 0 and len(printed) == 1 and printed[0].endswith(f"/enc@{digest}"), printed
        service_stack("other")
        assert values("live-target-group", "dev") == (1, []), "traffic to no enc group: no guess"
        assert values("live-target-group", "qa")[0] == 2
