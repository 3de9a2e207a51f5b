"""The AfterAllowTestTraffic hook (cloudformation/deploy.yaml), run as Lambda would run it:
its inline code, against a local HTTP server standing in for the test listener and moto
standing in for CodeDeploy. Whatever happens, it reports its verdict exactly once, to the
deployment that invoked it, before Lambda's timeout.

moto 5.2 has CodeDeploy applications, deployment groups and deployments but not
PutLifecycleEventHookExecutionStatus, so the test adds that one call to moto's CodeDeploy:
it checks the deployment exists (in moto) and records the verdict.
"""

import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.codedeploy.responses import CodeDeployResponse

sys.path.insert(0, str(Path(__file__).parent))
from test_infra import load_inline_code, resources  # noqa: E402

FUNCTION = resources("deploy")["SmokeTestFunction"]["Properties"]
CODE = FUNCTION["Code"]["ZipFile"]
TIMEOUT = FUNCTION["Timeout"]
REPORTS = []


def put_lifecycle_event_hook_execution_status(self):
    deployment = self._get_param("deploymentId")
    self.codedeploy_backend.get_deployment(deployment_id=deployment)  # raises if unknown
    hook = self._get_param("lifecycleEventHookExecutionId")
    REPORTS.append({"deployment": deployment, "hook": hook, "status": self._get_param("status")})
    return json.dumps({"lifecycleEventHookExecutionId": hook})


CodeDeployResponse.put_lifecycle_event_hook_execution_status = put_lifecycle_event_hook_execution_status


class Listener(http.server.ThreadingHTTPServer):
    """enc behind the test listener, answering each path as `answers` says: a status, or
    "hang" to accept the request and never answer."""

    daemon_threads = True

    def __init__(self, answers):
        self.answers = answers
        self.requests = []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.requests.append((self.path, self.headers.get("x-request-id")))
        answer = self.server.answers.get(self.path, 404)
        if answer == "hang":
            time.sleep(3600)
        self.send_response(answer)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


HEALTHY = {
    "/healthz": 200, "/readyz": 200, "/api-docs/openapi.json": 200, "/metrics-form": 200,
    "/nodes?limit=1": 401, "/nodes/enc-smoke-test.invalid/classification": 401,
}


class Context:
    """Lambda's context: the time left of the function's timeout."""

    def __init__(self, seconds):
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)


def load_hook(base_url, tmp_path):
    """The template's code as Lambda loads it, with its environment."""
    os.environ["SMOKE_BASE_URL"] = base_url
    return load_inline_code(CODE, "hook", tmp_path)


@pytest.fixture
def codedeploy(monkeypatch):
    """A deployment in moto's CodeDeploy, as the hook's event names it."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("codedeploy")
        client.create_application(applicationName="enc-dev", computePlatform="ECS")
        client.create_deployment_group(
            applicationName="enc-dev", deploymentGroupName="enc-dev",
            serviceRoleArn="arn:aws:iam::123456789012:role/enc-dev-codedeploy")
        deployment = client.create_deployment(
            applicationName="enc-dev", deploymentGroupName="enc-dev")["deploymentId"]
        REPORTS.clear()
        yield {"DeploymentId": deployment, "LifecycleEventHookExecutionId": "hook-1"}


def run(answers, event, tmp_path, seconds=TIMEOUT, base_url=None):
    listener = Listener(answers)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    try:
        hook = load_hook(base_url or listener.url, tmp_path)
        started = time.monotonic()
        outcome = hook.handler(event, Context(seconds))
        elapsed = time.monotonic() - started
    finally:
        listener.shutdown()
    assert elapsed < seconds, f"the hook ran {elapsed:.1f}s of its {seconds}s"
    assert len(REPORTS) == 1, f"reported {len(REPORTS)} times: {REPORTS}"
    report = REPORTS[0]
    assert (report["deployment"], report["hook"]) == (event["DeploymentId"], "hook-1")
    return outcome, report, listener, elapsed


def test_the_code_fits_inline_and_lambda_never_retries_it():
    assert len(CODE) <= 4096, "inline Lambda code is at most 4096 characters"
    config = resources("deploy")["SmokeTestInvokeConfig"]["Properties"]
    assert config["MaximumRetryAttempts"] == 0
    assert "ReservedConcurrentExecutions" not in FUNCTION


def test_healthy_tasks_pass_at_once(codedeploy, tmp_path):
    outcome, report, listener, elapsed = run(HEALTHY, codedeploy, tmp_path)
    assert outcome == {"passed": True} and report["status"] == "Succeeded"
    assert {path for path, _ in listener.requests} == set(HEALTHY)
    assert {rid for _, rid in listener.requests} == {"codedeploy-smoke-test"}
    assert elapsed < 5


def test_tasks_that_become_healthy_pass(codedeploy, tmp_path):
    answers = dict(HEALTHY, **{"/readyz": 503})
    timer = threading.Timer(2, lambda: answers.update({"/readyz": 200}))
    timer.start()
    outcome, report, _, _ = run(answers, codedeploy, tmp_path)
    timer.cancel()
    assert outcome == {"passed": True} and report["status"] == "Succeeded"


def test_a_failing_check_fails_within_the_time(codedeploy, tmp_path):
    answers = dict(HEALTHY, **{"/nodes?limit=1": 200})  # identity off: a failed deployment
    outcome, report, _, elapsed = run(answers, codedeploy, tmp_path, seconds=25)
    assert outcome == {"passed": False} and report["status"] == "Failed"
    assert elapsed >= 25 - 15 - 1, "it kept checking until its reserve"


def test_a_listener_that_never_answers_fails_within_the_time(codedeploy, tmp_path):
    answers = dict(HEALTHY, **{"/healthz": "hang"})
    outcome, report, _, _ = run(answers, codedeploy, tmp_path, seconds=24)
    assert outcome == {"passed": False} and report["status"] == "Failed"


def test_nothing_listening_fails(codedeploy, tmp_path):
    closed = Listener({})
    port = closed.server_address[1]
    closed.server_close()
    outcome, report, _, _ = run(HEALTHY, codedeploy, tmp_path, seconds=20,
                                base_url=f"http://127.0.0.1:{port}")
    assert outcome == {"passed": False} and report["status"] == "Failed"


def test_a_fault_in_the_checks_still_reports_failed(codedeploy, tmp_path, monkeypatch):
    listener = Listener(HEALTHY)
    hook = load_hook(listener.url, tmp_path)
    listener.server_close()

    def broken(path, timeout):
        raise RuntimeError("a bug in the smoke test")

    monkeypatch.setattr(hook, "status", broken)
    assert hook.handler(codedeploy, Context(TIMEOUT)) == {"passed": False}
    assert [r["status"] for r in REPORTS] == ["Failed"]


def test_the_time_budget_running_out_reports_before_lambda_stops_it(codedeploy, tmp_path):
    # Less time left than the reserve the hook keeps for reporting: it checks nothing more.
    outcome, report, listener, elapsed = run(HEALTHY, codedeploy, tmp_path, seconds=14)
    assert outcome == {"passed": False} and report["status"] == "Failed"
    assert listener.requests == [] and elapsed < 5


def test_tls_is_verified(codedeploy, tmp_path):
    assert shutil.which("openssl"), "the openssl command makes the test's certificate"
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    listener = Listener(HEALTHY)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener.socket = context.wrap_socket(listener.socket, server_side=True)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    try:
        hook = load_hook(f"https://127.0.0.1:{listener.server_address[1]}", tmp_path)
        assert hook.handler(codedeploy, Context(20)) == {"passed": False}
    finally:
        listener.shutdown()
    assert [r["status"] for r in REPORTS] == ["Failed"], "a certificate nobody trusts fails"
    assert listener.requests == []
