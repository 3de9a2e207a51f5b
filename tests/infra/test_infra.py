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
    scripts = [p for p in (ROOT / "scripts").iterdir() if p.suffix in ("", ".sh")] + [ROOT / ".ci/run"]
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
    placeholders = set(re.findall(r"\{\{(\w+)\}\}", (ROOT / "taskdef.json").read_text()))
    assert placeholders == {"STAGE", "AWS_REGION", "TASK_ROLE_ARN", "EXECUTION_ROLE_ARN", "IMAGE"}
    workflow = (ROOT / ".github/workflows/deploy-stage.yml").read_text()
    for name in placeholders - {"IMAGE"}:
        assert "{{%s}}" % name in workflow, f"the deploy workflow fills {name}"


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
    names = set(re.findall(r"\[env: (\w+)=", help_text)) | set(re.findall(r"\b(RUST_LOG)\b", help_text))
    for source in (ROOT / "src").rglob("*.rs"):
        names |= set(re.findall(r'env::var\("([A-Z0-9_]+)"\)', source.read_text()))
        names |= set(re.findall(r'"(OTEL_[A-Z0-9_]+)"', source.read_text()))
    return names


def test_every_variable_the_task_sets_is_read_by_enc():
    known = variables_enc_reads()
    assert {"ENC_LISTEN", "ENC_STORE", "ENC_TABLE_PREFIX", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= known
    set_by_taskdef = set(env_of(container()))
    assert set_by_taskdef - known == set()
    first = resources("service")["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert {e["Name"] for e in first["Environment"]} - known == set()


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
        assert gsis(props["GlobalSecondaryIndexes"]) == gsis(table["GlobalSecondaryIndexes"])
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["DeletionProtectionEnabled"] == {"Fn::If": ["IsProd", True, False]}


# The DynamoDB calls the service makes (src/store/dynamodb, but for tables.rs, which only the
# `enc dynamodb` commands use), as the IAM actions they need.
SDK_CALLS = {
    "get_item": "dynamodb:GetItem",
    "transact_get_items": "dynamodb:GetItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
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
    assert granted["dynamodb:Scan"] == {tables + "node_groups"}, "Scan only the groups table"


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


def test_shutdown_timings_line_up():
    grace = int(env_of(container())["ENC_SHUTDOWN_GRACE_SECONDS"])
    assert container()["stopTimeout"] > grace, "ECS must wait longer than enc's grace period"
    first = resources("service")["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert int({e["Name"]: e["Value"] for e in first["Environment"]}["ENC_SHUTDOWN_GRACE_SECONDS"]) == grace
    assert first["StopTimeout"] == container()["stopTimeout"]
    for tg in ("BlueTargetGroup", "GreenTargetGroup"):
        attributes = resources("service")[tg]["Properties"]["TargetGroupAttributes"]
        delay = int(next(a["Value"] for a in attributes if a["Key"] == "deregistration_delay.timeout_seconds"))
        assert grace <= delay < container()["stopTimeout"]


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
    for name, alarm in alarms.items():
        for namespace, metric, dimensions in alarm_metrics(alarm["Properties"]):
            names = {d["Name"] for d in dimensions}
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
    defined = {sub(a["Properties"]["AlarmName"], Stage="dev") for a in alarms.values()}
    assert {sub(a["Name"], Stage="dev") for a in deploy_alarms} <= defined


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


def test_github_roles_trust_only_their_repository_and_environment():
    roles = resources("github-oidc", "AWS::IAM::Role")
    assert set(roles) == {"BuildRole", "DevDeployRole", "StagingDeployRole", "ProdDeployRole"}
    for name, role in roles.items():
        statement = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert len(statement) == 1
        condition = statement[0]["Condition"]["StringEquals"]
        assert condition["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
        subject = sub(condition["token.actions.githubusercontent.com:sub"], GitHubOrg="o", GitHubRepo="r")
        assert "*" not in subject
        if name == "BuildRole":
            assert subject == "repo:o/r:ref:refs/heads/main"
        else:
            stage = name.removesuffix("DeployRole").lower()
            assert subject == f"repo:o/r:environment:{stage}"
            passed = json.dumps(role["Properties"]["Policies"])
            assert f"role/enc-{stage}-task" in passed and "iam:PassedToService" in passed


def test_ci_runs_the_readme_test_command_and_the_image_build():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    runs = [step.get("run", "") for job in ci["jobs"].values() for step in job["steps"]]
    assert "scripts/test" in runs and "scripts/build-release" in runs
    assert "scripts/test" in (ROOT / "README.md").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RUN scripts/build-release" in dockerfile
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/enc"\]', dockerfile, re.M), "exec form"
    assert re.search(r"^USER \d+:\d+", dockerfile, re.M), "non-root"
    deploy = (ROOT / ".github/workflows/deploy-stage.yml").read_text()
    assert "cancel-in-progress: false" in deploy and "environment: ${{ inputs.stage }}" in deploy
