"""Static checks of infra/ (Terraform), parsed with python-hcl2: the security properties the
service's design relies on, so a later edit cannot quietly widen them."""

import json
import re

import pytest

from conftest import INFRA, MODULE, Module, parse_tf, tf_files

FORBIDDEN_ACTIONS = {
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "ssm:GetParameterHistory",
    "secretsmanager:GetSecretValue",
    "secretsmanager:BatchGetSecretValue",
    "kms:Decrypt",
}


def statements(doc: dict) -> list[dict]:
    return doc.get("statement", [])


def principals(stmt: dict) -> list[tuple[str, list[str]]]:
    return [(p["type"], p["identifiers"]) for p in stmt.get("principals", [])]


def conditions(stmt: dict) -> dict[tuple[str, str], list]:
    return {(c["test"], c["variable"]): c["values"] for c in stmt.get("condition", [])}


def optional_defaults(type_expr: str) -> dict[str, float]:
    """`object({a = optional(number, 3), ...})` -> {"a": 3}."""
    return {k: float(v) for k, v in re.findall(r"(\w+)\s*=\s*optional\(number,\s*([0-9.]+)\)", type_expr)}


def test_every_tf_file_parses():
    files = tf_files()
    assert len(files) >= 8, files
    for f in files:
        assert isinstance(parse_tf(f), dict), f


def test_versions_pin_aws_provider_5(module: Module):
    for d in (MODULE, INFRA / "examples" / "basic"):
        tf = parse_tf(d / "versions.tf")["terraform"][0]
        aws = tf["required_providers"][0]["aws"]
        assert aws["source"] == "hashicorp/aws"
        assert aws["version"] == ">= 5.0"


def test_every_policy_is_an_inspected_policy_document(module: Module):
    """Policies are only ever data.aws_iam_policy_document (so the checks below see all of
    them), never inline JSON."""
    seen = 0
    for (typ, name), body in module.resources().items():
        for attr in ("policy", "assume_role_policy"):
            if attr in body:
                seen += 1
                assert re.fullmatch(r"\$\{data\.aws_iam_policy_document\.\w+(\[0\])?\.json\}", body[attr]), (
                    f"{typ}.{name}.{attr} must be a data.aws_iam_policy_document: {body[attr]}"
                )
    assert seen == 4  # topic, DLQ, role trust, role permissions
    for f in tf_files():
        text = f.read_text()
        assert '"Statement"' not in text and "Statement =" not in text, f"inline IAM JSON in {f}"
        for kind in ("aws_iam_role_policy_attachment", "aws_iam_policy_attachment", "managed_policy_arns"):
            assert kind not in text, f"{kind} in {f}: the role's permissions live in one inline policy"


def test_no_iam_action_contains_a_wildcard(module: Module):
    n = 0
    for name, doc in module.policy_documents().items():
        for stmt in statements(doc):
            assert "not_actions" not in stmt, f"{name}: NotAction widens grants"
            for action in stmt["actions"]:
                n += 1
                assert "*" not in action, f"{name}: action {action!r}"
    assert n > 0


def test_only_eventbridge_publishes_to_the_topic(module: Module):
    policy = module.resource("aws_sns_topic_policy", "this")
    assert policy["arn"] == "${aws_sns_topic.this.arn}"
    assert policy["policy"] == "${data.aws_iam_policy_document.topic.json}"
    stmts = statements(module.policy_documents()["topic"])
    assert len(stmts) == 1
    (stmt,) = stmts
    assert stmt["effect"] == "Allow"
    assert principals(stmt) == [("Service", ["events.amazonaws.com"])]
    assert stmt["actions"] == ["sns:Publish"]
    assert stmt["resources"] == ["${aws_sns_topic.this.arn}"]
    assert conditions(stmt) == {("ArnEquals", "aws:SourceArn"): "${local.rule_arns}"}
    rule_arns = module.locals()["rule_arns"]
    for rule in ("ssm", "secrets_manager_native", "secrets_manager_api", "ssm_api"):
        assert f"aws_cloudwatch_event_rule.{rule}" in rule_arns


def test_role_allows_exactly_confirm_subscription_and_describe_parameters(module: Module):
    doc = module.policy_documents()["service"]
    allowed = {}
    for stmt in statements(doc):
        if stmt.get("effect", "Allow") == "Allow":
            for a in stmt["actions"]:
                allowed[a] = stmt["resources"]
        else:
            assert stmt["effect"] == "Deny"
            assert set(stmt["actions"]) <= FORBIDDEN_ACTIONS
    assert set(allowed) == {"sns:ConfirmSubscription", "ssm:DescribeParameters"}
    assert allowed["sns:ConfirmSubscription"] == ["${aws_sns_topic.this.arn}"]
    # DescribeParameters has no resource-level permissions: "*" is its only form.
    assert allowed["ssm:DescribeParameters"] == ["*"]
    role_policy = module.resource("aws_iam_role_policy", "service")
    assert role_policy["policy"] == "${data.aws_iam_policy_document.service.json}"
    assert role_policy["role"] == "${aws_iam_role.irsa[0].id}"


def test_no_policy_allows_reading_secret_values(module: Module):
    for name, doc in module.policy_documents().items():
        for stmt in statements(doc):
            if stmt.get("effect", "Allow") == "Allow":
                hit = FORBIDDEN_ACTIONS & set(stmt["actions"])
                assert not hit, f"{name} allows {hit}"
                assert not any(a.lower().startswith(("ssm:get", "secretsmanager:get", "kms:")) for a in stmt["actions"])


def test_irsa_trust_is_one_service_account_with_sts_audience(module: Module):
    stmts = statements(module.policy_documents()["assume"])
    assert len(stmts) == 1
    (stmt,) = stmts
    assert stmt["effect"] == "Allow"
    assert stmt["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert principals(stmt) == [("Federated", ["${var.oidc_provider_arn}"])]
    assert conditions(stmt) == {
        ("StringEquals", "${local.oidc_issuer}:sub"): [
            "system:serviceaccount:${var.service_account_namespace}:${var.service_account_name}"
        ],
        ("StringEquals", "${local.oidc_issuer}:aud"): ["sts.amazonaws.com"],
    }
    assert "oidc-provider/" in module.locals()["oidc_issuer"]
    role = module.resource("aws_iam_role", "irsa")
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.assume[0].json}"


def test_irsa_defaults_match_the_kubernetes_service_account(module: Module):
    from conftest import one

    sa = one("base", "ServiceAccount", "ssm-resync")
    v = module.variables()
    assert v["service_account_name"]["default"] == sa["metadata"]["name"]
    assert v["service_account_namespace"]["default"] == sa["metadata"]["namespace"]


def test_https_subscription(module: Module):
    sub = module.resource("aws_sns_topic_subscription", "https")
    assert sub["protocol"] == "https"
    assert sub["endpoint"] == "${var.subscription_endpoint}"
    assert sub["topic_arn"] == "${aws_sns_topic.this.arn}"
    assert sub["endpoint_auto_confirms"] is False
    assert sub["raw_message_delivery"] is False, "raw delivery carries no signature"
    assert sub["confirmation_timeout_in_minutes"] == "${var.confirmation_timeout_in_minutes}"
    assert sub["delivery_policy"] == "${jsonencode(local.delivery_policy)}"
    redrive = sub["redrive_policy"]
    assert "deadLetterTargetArn" in redrive and "aws_sqs_queue.dlq.arn" in redrive, redrive
    endpoint_validation = module.variables()["subscription_endpoint"]["validation"][0]["condition"]
    assert "^https://" in endpoint_validation and "/sns$" in endpoint_validation


def test_delivery_policy_retry_window_within_sns_limit(module: Module):
    policy = module.locals()["delivery_policy"]
    retry = policy["healthyRetryPolicy"]
    assert retry["backoffFunction"] == "exponential"
    defaults = optional_defaults(module.variables()["delivery_retry"]["type"])

    def value(key: str) -> float:
        m = re.fullmatch(r"\$\{var\.delivery_retry\.(\w+)\}", str(retry[key]))
        return defaults[m.group(1)] if m else float(retry[key])

    n, no_delay = value("numRetries"), value("numNoDelayRetries")
    min_n, max_n = value("numMinDelayRetries"), value("numMaxDelayRetries")
    lo, hi = value("minDelayTarget"), value("maxDelayTarget")
    assert 0 <= n <= 100
    assert 1 <= lo <= hi <= 3600
    assert no_delay + min_n + max_n <= n
    # Upper bound of the whole window: every delay after the pre-backoff phase is at most
    # maxDelayTarget. SNS rejects a policy whose total exceeds 3600 s.
    window = min_n * lo + (n - no_delay - min_n) * hi
    assert window <= 3600, window
    assert n - no_delay - min_n - max_n > 0, "a backoff phase should exist"
    assert value("minDelayTarget") >= 1
    assert "maxReceivesPerSecond" in policy["throttlePolicy"]


def test_dead_letter_queue_encrypted_and_writable_only_by_this_topic_and_rules(module: Module):
    q = module.resource("aws_sqs_queue", "dlq")
    assert q["sqs_managed_sse_enabled"] is True
    qp = module.resource("aws_sqs_queue_policy", "dlq")
    assert qp["queue_url"] == "${aws_sqs_queue.dlq.id}"
    stmts = {s["sid"]: s for s in statements(module.policy_documents()["dlq"])}
    sns = stmts["SnsRedriveFromTopic"]
    assert principals(sns) == [("Service", ["sns.amazonaws.com"])]
    assert sns["actions"] == ["sqs:SendMessage"]
    assert conditions(sns) == {("ArnEquals", "aws:SourceArn"): ["${aws_sns_topic.this.arn}"]}
    events = stmts["EventBridgeDeadLetterFromRules"]
    assert principals(events) == [("Service", ["events.amazonaws.com"])]
    assert conditions(events) == {("ArnEquals", "aws:SourceArn"): "${local.rule_arns}"}
    for s in stmts.values():
        assert s["resources"] == ["${aws_sqs_queue.dlq.arn}"]


def test_dead_letter_queue_alarm(module: Module):
    a = module.resource("aws_cloudwatch_metric_alarm", "dlq")
    assert a["namespace"] == "AWS/SQS"
    assert a["metric_name"] == "ApproximateNumberOfMessagesVisible"
    assert a["dimensions"] == {"QueueName": "${aws_sqs_queue.dlq.name}"}
    assert a["comparison_operator"] == "GreaterThanThreshold"
    assert a["threshold"] == 0
    assert a["alarm_actions"] == "${var.alarm_actions}"
    assert "docs/runbook.md#ssmresyncdlqnotempty" in a["alarm_description"]


def test_eventbridge_rules_and_targets(module: Module):
    loc = module.locals()
    ssm = loc["ssm_event_pattern"]
    assert ssm["source"] == ["aws.ssm"]
    assert ssm["detail-type"] == ["Parameter Store Change"]
    assert ssm["detail"] == "${local.ssm_detail}"
    assert "operation = var.ssm_operations" in loc["ssm_detail"]
    assert "prefix = p" in loc["ssm_detail"], "name prefixes use EventBridge prefix matching"
    assert set(module.variables()["ssm_operations"]["default"]) == {"Create", "Update", "Delete", "LabelParameterVersion"}

    api = loc["secrets_manager_api_pattern"]
    assert api["source"] == ["aws.secretsmanager"]
    assert api["detail-type"] == ["AWS API Call via CloudTrail"]
    assert api["detail"]["eventSource"] == ["secretsmanager.amazonaws.com"]
    assert api["detail"]["eventName"] == "${var.secrets_manager_event_names}"
    # Every Secrets Manager call the service decodes as a change (src/event/mod.rs).
    assert set(module.variables()["secrets_manager_event_names"]["default"]) == {
        "CreateSecret", "PutSecretValue", "UpdateSecret", "RotateSecret", "DeleteSecret", "RestoreSecret",
        "UpdateSecretVersionStage", "TagResource", "UntagResource", "ReplicateSecretToRegions",
        "RemoveRegionsFromReplication",
    }
    assert loc["secrets_manager_native_pattern"]["source"] == ["aws.secretsmanager"]
    assert module.variables()["enable_secrets_manager"]["type"] == "bool"

    # The Parameter Store calls the native event does not report.
    ssm_api = loc["ssm_api_pattern"]
    assert ssm_api["source"] == ["aws.ssm"]
    assert ssm_api["detail-type"] == ["AWS API Call via CloudTrail"]
    assert ssm_api["detail"]["eventSource"] == ["ssm.amazonaws.com"]
    assert ssm_api["detail"]["eventName"] == "${var.parameter_store_cloudtrail_event_names}"
    assert set(module.variables()["parameter_store_cloudtrail_event_names"]["default"]) == {
        "UnlabelParameterVersion", "DeleteParameters", "AddTagsToResource", "RemoveTagsFromResource",
    }
    assert module.variables()["enable_parameter_store_cloudtrail"]["default"] is False

    for rule in ("ssm", "secrets_manager_native", "secrets_manager_api", "ssm_api"):
        r = module.resource("aws_cloudwatch_event_rule", rule)
        pattern_local = re.fullmatch(r"\$\{jsonencode\(local\.(\w+)\)\}", r["event_pattern"]).group(1)
        assert pattern_local in loc
        t = module.resource("aws_cloudwatch_event_target", rule)
        assert t["arn"] == "${aws_sns_topic.this.arn}"
        assert t["dead_letter_config"][0]["arn"] == "${aws_sqs_queue.dlq.arn}"
        if rule == "ssm_api":
            assert r["count"] == "${var.enable_parameter_store_cloudtrail ? 1 : 0}"
        elif rule != "ssm":
            assert r["count"] == "${var.enable_secrets_manager ? 1 : 0}"


def test_variables_and_outputs_are_documented(module: Module):
    for name, v in module.variables().items():
        assert v.get("description"), f"variable {name} has no description"
        assert "type" in v, f"variable {name} has no type"
    outputs = module.outputs()
    for name in ("topic_arn", "role_arn", "dlq_arn", "dlq_url"):
        assert name in outputs, name
    for name, o in outputs.items():
        assert o.get("description"), f"output {name} has no description"


def test_example_uses_the_module():
    main = parse_tf(INFRA / "examples" / "basic" / "main.tf")
    (mod,) = main["module"]
    body = mod["ssm_resync"]
    assert body["source"] == "../../modules/ssm-resync"
    assert "oidc_provider_arn" in body
    assert (INFRA / "examples" / "basic" / "terraform.tfvars.example").is_file()


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_checkov_skips_carry_a_reason(path):
    for line in path.read_text().splitlines():
        if "checkov:skip=" in line:
            assert re.search(r"checkov:skip=CKV2?_[A-Z]+_\d+:.{20,}", line), line


def test_delivery_policy_json_shape(module: Module):
    """The local is what jsonencode() sends: make sure it is the subscription-level shape
    (healthyRetryPolicy at the top), not the topic-level {"http": {...}} one."""
    policy = module.locals()["delivery_policy"]
    assert set(policy) == {"healthyRetryPolicy", "throttlePolicy"}
    json.dumps(policy)
