"""The AfterAllowTraffic hook (cloudformation/deploy.yaml), run as Lambda would run it: its
inline code against moto's Elastic Load Balancing, with a listener whose default action
CodeDeploy has moved to the replacement group and a sign-in rule still forwarding to the
original one. The hook points the rule where the default action goes, keeps the rule's
authentication, and reports its verdict exactly once (moto's CodeDeploy, with the one call
it lacks added by test_smoke_hook)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_infra import load_inline_code, moto_load_balancer, resources  # noqa: E402
from test_smoke_hook import REPORTS, codedeploy  # noqa: E402,F401  (the fixture)

FUNCTION = resources("deploy")["FollowTheSwapFunction"]["Properties"]
CODE = FUNCTION["Code"]["ZipFile"]

OIDC = {"Issuer": "https://idp.example.com", "AuthorizationEndpoint": "https://idp.example.com/auth",
        "TokenEndpoint": "https://idp.example.com/token", "UserInfoEndpoint": "https://idp.example.com/userinfo",
        "ClientId": "enc", "ClientSecret": "s3cret", "OnUnauthenticatedRequest": "authenticate"}


def load_hook(listener_arn, tmp_path):
    os.environ["HTTPS_LISTENER_ARN"] = listener_arn
    return load_inline_code(CODE, "swap", tmp_path)


def balancer():
    """A load balancer with blue and green groups, a listener and its sign-in rule on blue."""
    elbv2, lb, groups = moto_load_balancer()
    listener = elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=443,
                                     DefaultActions=[{"Type": "forward", "TargetGroupArn": groups["blue"]}])["Listeners"][0]["ListenerArn"]
    rule = elbv2.create_rule(ListenerArn=listener, Priority=10,
                             Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/metrics-form", "/metrics-form/*"]}}],
                             Actions=[{"Type": "authenticate-oidc", "Order": 1, "AuthenticateOidcConfig": OIDC},
                                      {"Type": "forward", "Order": 2, "TargetGroupArn": groups["blue"]}])["Rules"][0]["RuleArn"]
    return elbv2, listener, rule, groups


def swap(elbv2, listener, groups, weights):
    """What CodeDeploy does to the default action at a swap: weighted groups."""
    elbv2.modify_listener(ListenerArn=listener, DefaultActions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": groups[c], "Weight": w} for c, w in weights.items()]}}])


def rule_actions(elbv2, rule):
    return next(r for r in elbv2.describe_rules(RuleArns=[rule])["Rules"])["Actions"]


def test_the_code_fits_inline_and_lambda_never_retries_it():
    assert len(CODE) <= 4096, "inline Lambda code is at most 4096 characters"
    assert resources("deploy")["FollowTheSwapInvokeConfig"]["Properties"]["MaximumRetryAttempts"] == 0


def test_the_sign_in_rule_follows_the_swap_and_keeps_its_authentication(codedeploy, tmp_path):
    elbv2, listener, rule, groups = balancer()
    swap(elbv2, listener, groups, {"green": 100, "blue": 0})
    hook = load_hook(listener, tmp_path)
    assert hook.handler(codedeploy, None) == {"passed": True}
    assert [r["status"] for r in REPORTS] == ["Succeeded"]
    actions = sorted(rule_actions(elbv2, rule), key=lambda a: a["Order"])
    assert [a["Type"] for a in actions] == ["authenticate-oidc", "forward"]
    assert actions[0]["AuthenticateOidcConfig"]["Issuer"] == OIDC["Issuer"]
    assert hook.forwarded(actions) == {groups["green"]}
    # Asked again (the next deployment, back to blue), it follows again.
    REPORTS.clear()
    swap(elbv2, listener, groups, {"blue": 100, "green": 0})
    assert hook.handler(codedeploy, None) == {"passed": True}
    assert hook.forwarded(rule_actions(elbv2, rule)) == {groups["blue"]}


def test_a_default_action_split_between_groups_fails_the_deployment(codedeploy, tmp_path):
    elbv2, listener, rule, groups = balancer()
    swap(elbv2, listener, groups, {"green": 50, "blue": 50})
    hook = load_hook(listener, tmp_path)
    assert hook.handler(codedeploy, None) == {"passed": False}
    assert [r["status"] for r in REPORTS] == ["Failed"], "reported once, as failed"
    assert hook.forwarded(rule_actions(elbv2, rule)) == {groups["blue"]}, "nothing moved"


def test_codedeploy_may_invoke_it_and_the_appspec_names_it():
    deploy = resources("deploy")
    invoke = deploy["CodeDeployRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert {"Fn::GetAtt": ["FollowTheSwapFunction", "Arn"]} in invoke["Resource"]
    import yaml
    appspec = yaml.safe_load((Path(__file__).parents[2] / "appspec.yaml").read_text())
    hooks = {k: v for hook in appspec["Hooks"] for k, v in hook.items()}
    assert hooks["AfterAllowTraffic"] == "enc-{{STAGE}}-after-allow-traffic"
    assert FUNCTION["FunctionName"] == {"Fn::Sub": "enc-${Stage}-after-allow-traffic"}
