"""Static checks of infra/ (Terraform), parsed with python-hcl2: the security properties the
service's design relies on, so a later edit cannot quietly widen them."""

import json
import re

import pytest

from conftest import EXAMPLES, FORWARDER, INFRA, MODULE, Module, load_module, parse_tf, tf_files

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


# Every Terraform directory: the modules and the examples.
TF_DIRS = (MODULE, FORWARDER, EXAMPLES / "basic", EXAMPLES / "multi-region-multi-account")

# The patterns of the rules, the same in the central module and the forwarder.
PATTERN_LOCALS = (
    "ssm_detail",
    "ssm_event_pattern",
    "secrets_manager_native_pattern",
    "secrets_manager_api_pattern",
    "ssm_api_pattern",
)
RULES = ("ssm", "secrets_manager_native", "secrets_manager_api", "ssm_api")
# The variables that decide what is forwarded, shared by both modules.
FORWARDING_VARIABLES = (
    "ssm_operations",
    "parameter_name_prefixes",
    "enable_secrets_manager",
    "secrets_manager_event_names",
    "enable_parameter_store_cloudtrail",
    "parameter_store_cloudtrail_event_names",
)


def test_every_terraform_directory_parses():
    for d in TF_DIRS:
        files = sorted(d.glob("*.tf"))
        assert {f.name for f in files} >= {"versions.tf", "variables.tf", "outputs.tf"}, d
        assert all(isinstance(parse_tf(f), dict) for f in files), d
        assert load_module(d).docs, d


def test_versions_pin_aws_provider_5(module: Module):
    for d in TF_DIRS:
        tf = parse_tf(d / "versions.tf")["terraform"][0]
        aws = tf["required_providers"][0]["aws"]
        assert aws["source"] == "hashicorp/aws"
        assert aws["version"] == ">= 5.0"


def policy_attributes(m: Module) -> int:
    """Asserts every policy attribute of m's resources is a data.aws_iam_policy_document;
    returns how many there are."""
    seen = 0
    for (typ, name), body in m.resources().items():
        for attr in ("policy", "assume_role_policy"):
            if attr in body:
                seen += 1
                assert re.fullmatch(r"\$\{data\.aws_iam_policy_document\.\w+(\[0\])?\.json\}", body[attr]), (
                    f"{typ}.{name}.{attr} must be a data.aws_iam_policy_document: {body[attr]}"
                )
    return seen


def test_every_policy_is_an_inspected_policy_document(module: Module, forwarder: Module):
    """Policies are only ever data.aws_iam_policy_document (so the checks below see all of
    them), never inline JSON."""
    assert policy_attributes(module) == 6  # topic, DLQ, queue, role trust, role permissions, event bus
    assert policy_attributes(forwarder) == 3  # role trust, role permissions, DLQ
    for d in (EXAMPLES / "basic", EXAMPLES / "multi-region-multi-account"):
        assert policy_attributes(load_module(d)) == 0, f"{d}: policies belong in the modules"
    for f in tf_files():
        text = f.read_text()
        assert '"Statement"' not in text and "Statement =" not in text, f"inline IAM JSON in {f}"
        for kind in ("aws_iam_role_policy_attachment", "aws_iam_policy_attachment", "managed_policy_arns"):
            assert kind not in text, f"{kind} in {f}: the role's permissions live in one inline policy"


@pytest.mark.parametrize("directory", [MODULE, FORWARDER], ids=lambda p: p.name)
def test_no_iam_action_contains_a_wildcard(directory):
    n = 0
    for name, doc in load_module(directory).policy_documents().items():
        for stmt in statements(doc):
            assert "not_actions" not in stmt, f"{name}: NotAction widens grants"
            assert "not_principals" not in stmt and "not_resources" not in stmt, name
            for action in stmt["actions"]:
                n += 1
                assert "*" not in action, f"{name}: action {action!r}"
    assert n > 0


def test_only_eventbridge_publishes_to_the_topic(module: Module):
    policy = module.resource("aws_sns_topic_policy", "this")
    assert policy["arn"] == "${aws_sns_topic.this.arn}"
    assert policy["policy"] == "${data.aws_iam_policy_document.topic.json}"
    stmts = statements(module.policy_documents()["topic"])
    assert len(stmts) == 2
    stmt, deny = stmts
    assert stmt["effect"] == "Allow"
    assert principals(stmt) == [("Service", ["events.amazonaws.com"])]
    assert stmt["actions"] == ["sns:Publish"]
    assert stmt["resources"] == ["${aws_sns_topic.this.arn}"]
    assert conditions(stmt) == {("ArnEquals", "aws:SourceArn"): "${local.rule_arns}"}
    # Everyone else's Publish is denied (identity policies of administrators included), and
    # nothing but Publish: the policy itself stays changeable.
    assert deny["effect"] == "Deny"
    assert principals(deny) == [("*", ["*"])]
    assert deny["actions"] == ["sns:Publish"]
    assert deny["resources"] == ["${aws_sns_topic.this.arn}"]
    assert conditions(deny) == {("ArnNotEquals", "aws:SourceArn"): "${local.rule_arns}"}
    (exempt,) = deny["dynamic"]
    assert exempt["condition"]["for_each"] == "${length(var.topic_publisher_arns) > 0 ? [1] : []}"
    assert exempt["condition"]["content"] == [{
        "test": "ArnNotLike",
        "variable": "aws:PrincipalArn",
        "values": "${var.topic_publisher_arns}",
    }]
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
    # The queue's grant is merged in only with the queue; nothing else is merged.
    assert doc["source_policy_documents"] == "${data.aws_iam_policy_document.service_queue[*].json}"
    assert "override_policy_documents" not in doc
    role_policy = module.resource("aws_iam_role_policy", "service")
    assert role_policy["policy"] == "${data.aws_iam_policy_document.service.json}"
    assert role_policy["role"] == "${aws_iam_role.irsa[0].id}"


@pytest.mark.parametrize("directory", [MODULE, FORWARDER], ids=lambda p: p.name)
def test_no_policy_allows_reading_secret_values(directory):
    for name, doc in load_module(directory).policy_documents().items():
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


def test_role_consumes_exactly_the_queue(module: Module):
    """With the queue, the role gains exactly the four calls the consumer makes (the batch
    calls are authorised by the singular actions), on the queue's ARN only, and no KMS
    permission: the queue's SSE is SQS-managed."""
    doc = module.policy_documents()["service_queue"]
    assert doc["count"] == "${local.queue_enabled ? 1 : 0}"
    (stmt,) = statements(doc)
    assert stmt.get("effect", "Allow") == "Allow"
    assert sorted(stmt["actions"]) == sorted([
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    ])
    assert stmt["resources"] == ["${aws_sqs_queue.queue[0].arn}"]
    assert not principals(stmt) and not conditions(stmt)
    # The guardrail still denies kms:Decrypt, which a CMK-encrypted queue would need.
    denied = {a for s in statements(module.policy_documents()["service"]) if s.get("effect") == "Deny" for a in s["actions"]}
    assert "kms:Decrypt" in denied


def test_delivery_is_validated_and_webhook_by_default(module: Module):
    v = module.variables()["delivery"]
    assert v["type"] == "string"
    assert v["default"] == "webhook"
    assert v["validation"][0]["condition"] == '${contains(["webhook", "queue", "both"], var.delivery)}'
    loc = module.locals()
    assert loc["queue_enabled"] == '${contains(["queue", "both"], var.delivery)}'
    assert loc["https_enabled"] == '${contains(["webhook", "both"], var.delivery)}'
    assert loc["queue_from_topic"] == "${local.queue_enabled && !var.eventbridge_direct_to_queue}"
    assert loc["queue_from_rules"] == "${local.queue_enabled && var.eventbridge_direct_to_queue}"
    assert module.variables()["eventbridge_direct_to_queue"]["default"] is False
    # Everything of the queue path exists only with it.
    for (typ, name), body in module.resources().items():
        if typ.startswith("aws_sqs_queue") and "queue" in name or name in ("queue_dlq", "queue_stale"):
            assert body.get("count") in ("${local.queue_enabled ? 1 : 0}", "${local.queue_from_topic ? 1 : 0}"), (typ, name)
    # queue-only creates no HTTPS subscription, and refuses an endpoint rather than ignore it.
    https = module.resource("aws_sns_topic_subscription", "https")
    assert https["count"] == "${local.https_enabled && var.subscription_endpoint != null ? 1 : 0}"
    pre = {p["condition"] for p in module.resource("aws_sqs_queue", "queue")["lifecycle"][0]["precondition"]}
    assert '${var.delivery != "queue" || var.subscription_endpoint == null}' in pre
    assert "${var.dlq_message_retention_seconds >= var.queue_message_retention_seconds}" in pre
    topic_pre = module.resource("aws_sns_topic", "this")["lifecycle"][0]["precondition"]
    assert topic_pre[0]["condition"] == '${!var.eventbridge_direct_to_queue || contains(["queue", "both"], var.delivery)}'


def test_topic_signs_with_sha256(module: Module):
    assert module.resource("aws_sns_topic", "this")["signature_version"] == 2


def test_queue_and_its_dead_letter_queue_are_encrypted_and_redriven(module: Module):
    q = module.resource("aws_sqs_queue", "queue")
    dlq = module.resource("aws_sqs_queue", "queue_dlq")
    for body in (q, dlq):
        assert body["sqs_managed_sse_enabled"] is True
        assert "kms_master_key_id" not in body
        assert body["count"] == "${local.queue_enabled ? 1 : 0}"
    assert q["name"] == "${var.name}-queue" and dlq["name"] == "${var.name}-queue-dlq"
    redrive = q["redrive_policy"]
    assert redrive.startswith("${jsonencode(")
    assert "deadLetterTargetArn = aws_sqs_queue.queue_dlq[0].arn" in redrive
    assert "maxReceiveCount = var.queue_max_receive_count" in redrive
    v = module.variables()
    assert v["queue_max_receive_count"]["default"] == 10
    # The longest SQS allows: a notification may wait out an outage.
    assert q["message_retention_seconds"] == "${var.queue_message_retention_seconds}"
    assert v["queue_message_retention_seconds"]["default"] == 1209600
    assert dlq["message_retention_seconds"] == "${var.dlq_message_retention_seconds}"
    assert v["dlq_message_retention_seconds"]["default"] >= v["queue_message_retention_seconds"]["default"]
    assert q["receive_wait_time_seconds"] == 20
    assert q["visibility_timeout_seconds"] == 30
    allow = module.resource("aws_sqs_queue_redrive_allow_policy", "queue_dlq")
    assert allow["queue_url"] == "${aws_sqs_queue.queue_dlq[0].id}"
    assert allow["redrive_allow_policy"] == (
        '${jsonencode({redrivePermission = "byQueue", sourceQueueArns = [aws_sqs_queue.queue[0].arn]})}'
    )


def test_queue_policy_admits_only_the_topic_or_the_rules(module: Module):
    qp = module.resource("aws_sqs_queue_policy", "queue")
    assert qp["queue_url"] == "${aws_sqs_queue.queue[0].id}"
    assert qp["policy"] == "${data.aws_iam_policy_document.queue[0].json}"
    docs = module.policy_documents()
    merged = docs["queue"]
    assert "statement" not in merged
    assert merged["source_policy_documents"] == (
        "${concat(data.aws_iam_policy_document.queue_from_topic[*].json, "
        "data.aws_iam_policy_document.queue_from_rules[*].json)}"
    )
    # The subscribed queue: SNS, from this topic only.
    assert docs["queue_from_topic"]["count"] == "${local.queue_from_topic ? 1 : 0}"
    (sns,) = statements(docs["queue_from_topic"])
    assert sns["effect"] == "Allow"
    assert principals(sns) == [("Service", ["sns.amazonaws.com"])]
    assert sns["actions"] == ["sqs:SendMessage"]
    assert sns["resources"] == ["${aws_sqs_queue.queue[0].arn}"]
    assert conditions(sns) == {("ArnEquals", "aws:SourceArn"): ["${aws_sns_topic.this.arn}"]}
    # eventbridge_direct_to_queue: EventBridge from this module's rules only, and a Deny of
    # SendMessage to everyone else (unsigned events are trusted on this policy alone).
    assert docs["queue_from_rules"]["count"] == "${local.queue_from_rules ? 1 : 0}"
    events, deny = statements(docs["queue_from_rules"])
    assert principals(events) == [("Service", ["events.amazonaws.com"])]
    assert events["actions"] == ["sqs:SendMessage"]
    assert events["resources"] == ["${aws_sqs_queue.queue[0].arn}"]
    assert conditions(events) == {("ArnEquals", "aws:SourceArn"): "${local.rule_arns}"}
    assert deny["effect"] == "Deny"
    assert principals(deny) == [("*", ["*"])]
    assert deny["actions"] == ["sqs:SendMessage"]
    assert deny["resources"] == ["${aws_sqs_queue.queue[0].arn}"]
    assert conditions(deny) == {("ArnNotEquals", "aws:SourceArn"): "${local.rule_arns}"}
    (exempt,) = deny["dynamic"]
    assert exempt["condition"]["content"] == [{
        "test": "ArnNotLike",
        "variable": "aws:PrincipalArn",
        "values": "${var.queue_sender_arns}",
    }]


def test_queue_subscription_is_signed_and_redriven(module: Module):
    sub = module.resource("aws_sns_topic_subscription", "queue")
    assert sub["count"] == "${local.queue_from_topic ? 1 : 0}"
    assert sub["protocol"] == "sqs"
    assert sub["topic_arn"] == "${aws_sns_topic.this.arn}"
    assert sub["endpoint"] == "${aws_sqs_queue.queue[0].arn}"
    assert sub["raw_message_delivery"] is False, "raw delivery carries no signature"
    assert "aws_sqs_queue.dlq.arn" in sub["redrive_policy"]
    assert "${aws_sqs_queue_policy.queue}" in sub["depends_on"]


def test_rules_target_the_queue_only_when_asked(module: Module):
    t = module.resource("aws_cloudwatch_event_target", "queue")
    assert t["for_each"] == "${local.queue_target_rules}"
    assert t["rule"] == "${each.value}"
    assert t["arn"] == "${aws_sqs_queue.queue[0].arn}"
    assert t["dead_letter_config"][0]["arn"] == "${aws_sqs_queue.dlq.arn}"
    assert t["retry_policy"][0]["maximum_event_age_in_seconds"] <= 86400
    targets = module.locals()["queue_target_rules"]
    assert targets.startswith("${local.queue_from_rules ? merge(")
    for rule in RULES:
        assert f"aws_cloudwatch_event_rule.{rule}" in targets, rule


def test_queue_alarms(module: Module):
    dlq = module.resource("aws_cloudwatch_metric_alarm", "queue_dlq")
    assert dlq["namespace"] == "AWS/SQS"
    assert dlq["metric_name"] == "ApproximateNumberOfMessagesVisible"
    assert dlq["dimensions"] == {"QueueName": "${aws_sqs_queue.queue_dlq[0].name}"}
    assert dlq["comparison_operator"] == "GreaterThanThreshold"
    assert dlq["threshold"] == 0
    stale = module.resource("aws_cloudwatch_metric_alarm", "queue_stale")
    assert stale["metric_name"] == "ApproximateAgeOfOldestMessage"
    assert stale["dimensions"] == {"QueueName": "${aws_sqs_queue.queue[0].name}"}
    assert stale["threshold"] == "${var.queue_oldest_message_alarm_seconds}"
    runbook = (INFRA.parent / "docs" / "runbook.md").read_text()
    for a, anchor, heading in (
        (dlq, "ssmresyncqueuedlqnotempty", "### SSMResyncQueueDLQNotEmpty"),
        (stale, "ssmresyncqueuestale", "### SSMResyncQueueStale"),
    ):
        assert a["count"] == "${local.queue_enabled ? 1 : 0}"
        assert a["alarm_actions"] == "${var.alarm_actions}"
        assert a["ok_actions"] == "${var.ok_actions}"
        assert f"docs/runbook.md#{anchor}" in a["alarm_description"]
        assert heading in runbook, heading


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
    for name in ("topic_arn", "role_arn", "dlq_arn", "dlq_url", "queue_url", "queue_arn", "queue_dlq_arn"):
        assert name in outputs, name
    assert outputs["queue_url"]["value"] == "${one(aws_sqs_queue.queue[*].url)}"
    assert outputs["queue_arn"]["value"] == "${one(aws_sqs_queue.queue[*].arn)}"
    assert outputs["queue_dlq_arn"]["value"] == "${one(aws_sqs_queue.queue_dlq[*].arn)}"
    for name, o in outputs.items():
        assert o.get("description"), f"output {name} has no description"


def test_example_uses_the_module():
    main = parse_tf(INFRA / "examples" / "basic" / "main.tf")
    (mod,) = main["module"]
    body = mod["ssm_resync"]
    assert body["source"] == "../../modules/ssm-resync"
    assert "oidc_provider_arn" in body
    assert (INFRA / "examples" / "basic" / "terraform.tfvars.example").is_file()
    # The queue path is one input away, and the webhook stays the default.
    assert body["delivery"] == "${var.delivery}"
    basic = load_module(EXAMPLES / "basic")
    assert basic.variables()["delivery"]["default"] == "webhook"
    assert basic.outputs()["queue_url"]["value"] == "${module.ssm_resync.queue_url}"
    assert 'delivery = "queue"' in (INFRA / "examples" / "basic" / "terraform.tfvars.example").read_text()


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


# --- many regions, many accounts: the forwarder, the central bus policy, the example ---------


def pattern_keys(value) -> set[str]:
    """Every key of a (nested) pattern local."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in pattern_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in pattern_keys(v)}
    return set()


def test_central_rules_match_events_of_every_region_and_account(module: Module):
    """Forwarded events keep their original account and region: a pattern naming either would
    drop them on the central bus."""
    loc = module.locals()
    for name in PATTERN_LOCALS:
        keys = pattern_keys(loc[name])
        assert not keys & {"account", "region"}, f"{name} filters on {keys & {'account', 'region'}}"
        assert "account" not in str(loc[name]) and "region" not in str(loc[name]), name
    for rule in RULES:
        r = module.resource("aws_cloudwatch_event_rule", rule)
        # On the default bus, which the forwarders target and the bus policy opens.
        assert "event_bus_name" not in r, rule


def test_forwarder_patterns_equal_the_central_modules(module: Module, forwarder: Module):
    central, fwd = module.locals(), forwarder.locals()
    for name in PATTERN_LOCALS:
        assert fwd[name] == central[name], f"{name} differs between the modules"
    cv, fv = module.variables(), forwarder.variables()
    for name in FORWARDING_VARIABLES:
        for key in ("type", "default", "validation"):
            assert fv[name].get(key) == cv[name].get(key), f"variable {name}: {key} differs between the modules"
    for rule in RULES:
        c = module.resource("aws_cloudwatch_event_rule", rule)
        f = forwarder.resource("aws_cloudwatch_event_rule", rule)
        for key in ("name", "event_pattern", "count"):
            assert f.get(key) == c.get(key), f"rule {rule}: {key} differs between the modules"
        assert "event_bus_name" not in f, f"rule {rule}: the events are on the default bus"
    assert set(r for t, r in forwarder.resources() if t == "aws_cloudwatch_event_rule") == set(RULES)
    for name in ("ssm_operations", "parameter_name_prefixes", "secrets_manager_event_names", "parameter_store_cloudtrail_event_names"):
        assert fv[name]["validation"], name
    assert fv["name"]["validation"] == cv["name"]["validation"]


def test_forwarder_targets_the_central_bus_with_retries_and_dead_letter(forwarder: Module):
    v = forwarder.variables()["central_event_bus_arn"]
    assert "default" not in v, "central_event_bus_arn is required"
    assert "event-bus/default$" in v["validation"][0]["condition"]
    for rule in RULES:
        t = forwarder.resource("aws_cloudwatch_event_target", rule)
        assert t["arn"] == "${var.central_event_bus_arn}"
        assert t["role_arn"] == "${aws_iam_role.forward.arn}"
        rule_ref = "aws_cloudwatch_event_rule.ssm.name" if rule == "ssm" else f"aws_cloudwatch_event_rule.{rule}[0].name"
        assert t["rule"] == "${" + rule_ref + "}"
        assert t["dead_letter_config"][0]["arn"] == "${aws_sqs_queue.dlq.arn}"
        assert t["retry_policy"][0]["maximum_event_age_in_seconds"] <= 86400
        assert t.get("count") == forwarder.resource("aws_cloudwatch_event_rule", rule).get("count")
    targets = [r for t, r in forwarder.resources() if t == "aws_cloudwatch_event_target"]
    assert sorted(targets) == sorted(RULES)
    rule_arns = forwarder.locals()["rule_arns"]
    for rule in RULES:
        assert f"aws_cloudwatch_event_rule.{rule}" in rule_arns


def test_forwarder_role_allows_exactly_put_events_on_the_central_bus(forwarder: Module):
    allowed = []
    for stmt in statements(forwarder.policy_documents()["forward"]):
        assert stmt.get("effect", "Allow") == "Allow"
        allowed.append((stmt["actions"], stmt["resources"]))
    assert allowed == [(["events:PutEvents"], ["${var.central_event_bus_arn}"])]
    rp = forwarder.resource("aws_iam_role_policy", "forward")
    assert rp["policy"] == "${data.aws_iam_policy_document.forward.json}"
    assert rp["role"] == "${aws_iam_role.forward.id}"
    # Nothing else is attached to the role.
    role_policies = [k for k in forwarder.resources() if k[0] == "aws_iam_role_policy"]
    assert role_policies == [("aws_iam_role_policy", "forward")]


def test_forwarder_role_trusts_only_this_modules_rules(forwarder: Module):
    (stmt,) = statements(forwarder.policy_documents()["assume"])
    assert stmt["effect"] == "Allow"
    assert stmt["actions"] == ["sts:AssumeRole"]
    assert principals(stmt) == [("Service", ["events.amazonaws.com"])]
    assert conditions(stmt) == {
        ("StringEquals", "aws:SourceAccount"): ["${local.account}"],
        ("ArnEquals", "aws:SourceArn"): "${local.rule_arns}",
    }
    role = forwarder.resource("aws_iam_role", "forward")
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.assume.json}"
    assert role["permissions_boundary"] == "${var.permissions_boundary_arn}"
    # IAM names are global: one account forwards from several regions.
    assert "${local.region}" in role["name"]
    # The forwarder never targets its own bus (a loop).
    (pre,) = role["lifecycle"][0]["precondition"]
    assert pre["condition"] == "${var.central_event_bus_arn != data.aws_cloudwatch_event_bus.local.arn}"


def test_forwarder_dead_letter_queue(forwarder: Module):
    q = forwarder.resource("aws_sqs_queue", "dlq")
    assert q["sqs_managed_sse_enabled"] is True
    assert forwarder.resource("aws_sqs_queue_policy", "dlq")["queue_url"] == "${aws_sqs_queue.dlq.id}"
    (stmt,) = statements(forwarder.policy_documents()["dlq"])
    assert principals(stmt) == [("Service", ["events.amazonaws.com"])]
    assert stmt["actions"] == ["sqs:SendMessage"]
    assert stmt["resources"] == ["${aws_sqs_queue.dlq.arn}"]
    assert conditions(stmt) == {("ArnEquals", "aws:SourceArn"): "${local.rule_arns}"}
    a = forwarder.resource("aws_cloudwatch_metric_alarm", "dlq")
    assert a["metric_name"] == "ApproximateNumberOfMessagesVisible"
    assert a["dimensions"] == {"QueueName": "${aws_sqs_queue.dlq.name}"}
    assert a["alarm_actions"] == "${var.alarm_actions}"
    assert "docs/deploy.md#forwarder-dead-letter-queue" in a["alarm_description"]
    assert "### Forwarder dead-letter queue" in (INFRA.parent / "docs" / "deploy.md").read_text()


def test_forwarder_variables_and_outputs_are_documented(forwarder: Module):
    for name, v in forwarder.variables().items():
        assert v.get("description"), f"variable {name} has no description"
        assert "type" in v, f"variable {name} has no type"
    outputs = forwarder.outputs()
    assert outputs["rule_arns"]["value"] == "${local.rule_arns}"
    assert outputs["role_arn"]["value"] == "${aws_iam_role.forward.arn}"
    for name, o in outputs.items():
        assert o.get("description"), f"output {name} has no description"
    # No provider blocks in a module: the caller passes one per account and region.
    assert forwarder.providers() == {}


def test_bus_policy_is_off_by_default(module: Module):
    """Backwards compatible: without source_account_ids and organization_id nothing changes."""
    v = module.variables()
    assert v["source_account_ids"]["default"] == []
    assert v["organization_id"]["default"] is None
    assert v["manage_event_bus_policy"]["default"] is True
    loc = module.locals()
    assert loc["accept_other_accounts"] == "${var.organization_id != null || length(var.source_account_ids) > 0}"
    bp = module.resource("aws_cloudwatch_event_bus_policy", "default")
    assert bp["count"] == "${local.accept_other_accounts && var.manage_event_bus_policy ? 1 : 0}"
    assert bp["policy"] == "${data.aws_iam_policy_document.event_bus[0].json}"
    assert bp["event_bus_name"] == "${data.aws_cloudwatch_event_bus.default.name}"
    assert module.data("aws_cloudwatch_event_bus", "default")["name"] == "default"
    assert loc["event_bus_arn"] == "${data.aws_cloudwatch_event_bus.default.arn}"
    docs = module.policy_documents()
    assert docs["event_bus"]["count"] == "${local.accept_other_accounts ? 1 : 0}"
    assert "statement" not in docs["event_bus"]
    merged = docs["event_bus"]["source_policy_documents"]
    assert "data.aws_iam_policy_document.event_bus_from_organization[*].json" in merged
    assert "data.aws_iam_policy_document.event_bus_from_accounts[*].json" in merged
    assert docs["event_bus_from_organization"]["count"] == "${var.organization_id == null ? 0 : 1}"
    assert docs["event_bus_from_accounts"]["count"] == "${length(var.source_account_ids) == 0 ? 0 : 1}"
    assert "^[0-9]{12}$" in v["source_account_ids"]["validation"][0]["condition"]
    assert "^o-" in v["organization_id"]["validation"][0]["condition"]
    outputs = module.outputs()
    assert outputs["event_bus_arn"]["value"] == "${local.event_bus_arn}"
    assert outputs["event_bus_policy_json"]["value"] == "${one(data.aws_iam_policy_document.event_bus[*].json)}"


def test_bus_policy_admits_only_the_organization_or_the_listed_accounts(module: Module):
    docs = module.policy_documents()
    accepted = {
        ("ForAllValues:StringEquals", "events:source"): "${local.accepted_sources}",
        ("ForAllValues:StringEquals", "events:detail-type"): "${local.accepted_detail_types}",
    }
    (org,) = statements(docs["event_bus_from_organization"])
    assert org["effect"] == "Allow"
    assert org["actions"] == ["events:PutEvents"]
    assert org["resources"] == ["${local.event_bus_arn}"]
    # "*" only with the organization condition.
    assert principals(org) == [("AWS", ["*"])]
    assert conditions(org) == {("StringEquals", "aws:PrincipalOrgID"): ["${var.organization_id}"], **accepted}

    (acc,) = statements(docs["event_bus_from_accounts"])
    assert acc["effect"] == "Allow"
    assert acc["actions"] == ["events:PutEvents"]
    assert acc["resources"] == ["${local.event_bus_arn}"]
    ((typ, identifiers),) = principals(acc)
    assert typ == "AWS"
    assert identifiers == '${[for id in var.source_account_ids : "arn:${local.partition}:iam::${id}:root"]}'
    assert conditions(acc) == accepted

    # The sources and detail-types admitted are those of the enabled rules' patterns.
    loc = module.locals()
    for name in ("ssm_event_pattern", "secrets_manager_native_pattern", "secrets_manager_api_pattern", "ssm_api_pattern"):
        assert f"local.{name}.source" in loc["accepted_sources"], name
        assert f'local.{name}["detail-type"]' in loc["accepted_detail_types"], name
    assert "var.enable_secrets_manager ?" in loc["accepted_sources"]
    assert "var.enable_parameter_store_cloudtrail ?" in loc["accepted_detail_types"]
    assert loc["partition"] == '${element(split(":", local.event_bus_arn), 1)}'


def test_multi_region_multi_account_example_uses_both_modules(multi_example: Module):
    d = EXAMPLES / "multi-region-multi-account"
    assert (d / "terraform.tfvars.example").is_file()
    mods = multi_example.modules()
    central = mods.pop("ssm_resync")
    assert central["source"] == "../../modules/ssm-resync"
    assert "providers" not in central  # the default provider: central account and region
    assert central["organization_id"] == "${var.organization_id}"
    assert "var.member_account_id" in central["source_account_ids"]
    assert "oidc_provider_arn" in central

    providers = multi_example.providers()
    default = providers.pop("")
    assert default["region"] == "${var.central_region}"
    assert default["allowed_account_ids"] == ["${var.central_account_id}"]
    assert len(mods) >= 2, mods
    used = set()
    for name, body in mods.items():
        assert body["source"] == "../../modules/ssm-resync-forwarder", name
        assert body["central_event_bus_arn"] == "${module.ssm_resync.event_bus_arn}", name
        alias = re.fullmatch(r"\$\{aws\.(\w+)\}", body["providers"]["aws"]).group(1)
        assert alias in providers, f"{name}: provider aws.{alias} not configured"
        assert alias not in used, f"{name}: two forwarders in one account and region"
        used.add(alias)
        # Forwarders send what the central rules match.
        for var in ("parameter_name_prefixes", "enable_secrets_manager", "enable_parameter_store_cloudtrail"):
            assert body[var] == central[var], f"{name}.{var} differs from the central module's"
    # Another region of the central account, and the member account (assumed role) in two regions.
    regions = {(p["allowed_account_ids"][0], p["region"]) for p in providers.values()}
    assert ("${var.central_account_id}", "${var.extra_region}") in regions
    assert ("${var.member_account_id}", "${var.central_region}") in regions
    assert ("${var.member_account_id}", "${var.extra_region}") in regions
    for alias, p in providers.items():
        if p["allowed_account_ids"] == ["${var.member_account_id}"]:
            assert p["assume_role"][0]["role_arn"] == "${var.member_role_arn}", alias
        assert p["alias"] == alias
    for name, v in multi_example.variables().items():
        assert v.get("description") and "type" in v, name
    outputs = multi_example.outputs()
    assert outputs["topic_arn"]["value"] == "${module.ssm_resync.topic_arn}"
    for name, o in outputs.items():
        assert o.get("description"), f"output {name} has no description"
