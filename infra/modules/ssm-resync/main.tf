# EventBridge -> SNS -> HTTPS (ssm-resync) and/or SQS (queue.tf), as var.delivery says. The
# topic carries change events only: parameter and secret names, never values.

locals {
  # The patterns name neither `account` nor `region`: events that forwarders
  # (infra/modules/ssm-resync-forwarder) put on this bus from other regions and accounts match
  # like local ones. The forwarder repeats these patterns; tests/deploy/test_infra.py keeps
  # the two in step.
  ssm_detail = merge(
    { operation = var.ssm_operations },
    length(var.parameter_name_prefixes) == 0 ? {} : {
      name = [for p in var.parameter_name_prefixes : { prefix = p }]
    },
  )

  ssm_event_pattern = {
    source        = ["aws.ssm"]
    "detail-type" = ["Parameter Store Change"]
    detail        = local.ssm_detail
  }

  secrets_manager_native_pattern = {
    source        = ["aws.secretsmanager"]
    "detail-type" = ["Secret Label Updated"]
  }

  secrets_manager_api_pattern = {
    source        = ["aws.secretsmanager"]
    "detail-type" = ["AWS API Call via CloudTrail"]
    detail = {
      eventSource = ["secretsmanager.amazonaws.com"]
      eventName   = var.secrets_manager_event_names
    }
  }

  ssm_api_pattern = {
    source        = ["aws.ssm"]
    "detail-type" = ["AWS API Call via CloudTrail"]
    detail = {
      eventSource = ["ssm.amazonaws.com"]
      eventName   = var.parameter_store_cloudtrail_event_names
    }
  }

  # Every rule allowed to publish (the topic policy's aws:SourceArn condition).
  rule_arns = concat(
    [aws_cloudwatch_event_rule.ssm.arn],
    aws_cloudwatch_event_rule.secrets_manager_native[*].arn,
    aws_cloudwatch_event_rule.secrets_manager_api[*].arn,
    aws_cloudwatch_event_rule.ssm_api[*].arn,
  )
}

resource "aws_sns_topic" "this" {
  #checkov:skip=CKV_AWS_26:Messages hold parameter/secret names and event metadata, never values. EventBridge can only publish to a topic encrypted with a customer-managed key whose policy admits events.amazonaws.com, so encryption is opt-in through var.topic_kms_master_key_id.
  name              = var.name
  kms_master_key_id = var.topic_kms_master_key_id
  # Sign with SHA256 (SignatureVersion 2) rather than SNS's default SHA1.
  signature_version = 2
  tags              = var.tags

  lifecycle {
    precondition {
      condition     = !var.eventbridge_direct_to_queue || contains(["queue", "both"], var.delivery)
      error_message = "eventbridge_direct_to_queue needs delivery = \"queue\" or \"both\" (there is no queue otherwise)."
    }
  }
}

# Only EventBridge, and only for this module's rules, may publish. Principals of the account
# keep the access their IAM policies give them (same-account access needs no topic grant).
data "aws_iam_policy_document" "topic" {
  statement {
    sid     = "EventBridgePublishFromRules"
    effect  = "Allow"
    actions = ["sns:Publish"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    resources = [aws_sns_topic.this.arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = local.rule_arns
    }
  }

  # An identity policy granting sns:Publish (an administrator's, a CI role's) would otherwise
  # reach the topic too, and each message it publishes is delivered, signed by AWS, to the
  # service, which acts on it. Deny Publish to everything but this module's rules (and any
  # principals listed in topic_publisher_arns). Only sns:Publish is denied: administrators
  # keep every other action on the topic, including SetTopicAttributes, so this policy can
  # never lock them out of changing it.
  statement {
    sid     = "DenyPublishExceptFromTheRules"
    effect  = "Deny"
    actions = ["sns:Publish"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    resources = [aws_sns_topic.this.arn]
    condition {
      test     = "ArnNotEquals"
      variable = "aws:SourceArn"
      values   = local.rule_arns
    }
    dynamic "condition" {
      for_each = length(var.topic_publisher_arns) > 0 ? [1] : []
      content {
        test     = "ArnNotLike"
        variable = "aws:PrincipalArn"
        values   = var.topic_publisher_arns
      }
    }
  }
}

resource "aws_sns_topic_policy" "this" {
  arn    = aws_sns_topic.this.arn
  policy = data.aws_iam_policy_document.topic.json
}

# --- EventBridge rules ----------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "ssm" {
  name          = "${var.name}-ssm"
  description   = "Parameter Store Change events forwarded to ssm-resync"
  event_pattern = jsonencode(local.ssm_event_pattern)
  tags          = var.tags
}

resource "aws_cloudwatch_event_rule" "secrets_manager_native" {
  count         = var.enable_secrets_manager ? 1 : 0
  name          = "${var.name}-secretsmanager"
  description   = "Secrets Manager native events forwarded to ssm-resync"
  event_pattern = jsonencode(local.secrets_manager_native_pattern)
  tags          = var.tags
}

resource "aws_cloudwatch_event_rule" "secrets_manager_api" {
  count         = var.enable_secrets_manager ? 1 : 0
  name          = "${var.name}-secretsmanager-api"
  description   = "Secrets Manager write calls (CloudTrail) forwarded to ssm-resync"
  event_pattern = jsonencode(local.secrets_manager_api_pattern)
  tags          = var.tags
}

resource "aws_cloudwatch_event_rule" "ssm_api" {
  count         = var.enable_parameter_store_cloudtrail ? 1 : 0
  name          = "${var.name}-ssm-cloudtrail"
  description   = "Parameter Store calls the native event does not report (CloudTrail), forwarded to ssm-resync"
  event_pattern = jsonencode(local.ssm_api_pattern)
  tags          = var.tags
}

# EventBridge retries a failed publish (topic policy or KMS key wrong, SNS throttling) for up
# to an hour, then parks the event in the same dead-letter queue as undeliverable
# notifications, so one alarm covers both ends.
resource "aws_cloudwatch_event_target" "ssm" {
  rule      = aws_cloudwatch_event_rule.ssm.name
  target_id = "ssm-resync-sns"
  arn       = aws_sns_topic.this.arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }
}

resource "aws_cloudwatch_event_target" "secrets_manager_native" {
  count     = var.enable_secrets_manager ? 1 : 0
  rule      = aws_cloudwatch_event_rule.secrets_manager_native[0].name
  target_id = "ssm-resync-sns"
  arn       = aws_sns_topic.this.arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }
}

resource "aws_cloudwatch_event_target" "secrets_manager_api" {
  count     = var.enable_secrets_manager ? 1 : 0
  rule      = aws_cloudwatch_event_rule.secrets_manager_api[0].name
  target_id = "ssm-resync-sns"
  arn       = aws_sns_topic.this.arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }
}

resource "aws_cloudwatch_event_target" "ssm_api" {
  count     = var.enable_parameter_store_cloudtrail ? 1 : 0
  rule      = aws_cloudwatch_event_rule.ssm_api[0].name
  target_id = "ssm-resync-sns"
  arn       = aws_sns_topic.this.arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }
}
