# Forwards this account's and region's Parameter Store (and optionally Secrets Manager) change
# events to the default event bus of the central account and region, where
# infra/modules/ssm-resync's rules publish them to its topic. Instantiate once per extra
# region of the central account and once per region of each member account, with a provider
# for that account and region. EventBridge keeps the original event's account and region when
# it delivers to another bus, so the service sees where each change happened.

data "aws_cloudwatch_event_bus" "local" {
  name = "default"
}

locals {
  # arn:<partition>:events:<region>:<account>:event-bus/default
  local_bus = split(":", data.aws_cloudwatch_event_bus.local.arn)
  region    = local.local_bus[3]
  account   = local.local_bus[4]

  # The same patterns as infra/modules/ssm-resync (tests/deploy/test_infra.py asserts they are
  # equal): what the central rules match is exactly what is forwarded.
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

  # The rules that may assume the role and write to the dead-letter queue.
  rule_arns = concat(
    [aws_cloudwatch_event_rule.ssm.arn],
    aws_cloudwatch_event_rule.secrets_manager_native[*].arn,
    aws_cloudwatch_event_rule.secrets_manager_api[*].arn,
    aws_cloudwatch_event_rule.ssm_api[*].arn,
  )
}

# --- EventBridge rules (names as in infra/modules/ssm-resync) ----------------------------

resource "aws_cloudwatch_event_rule" "ssm" {
  name          = "${var.name}-ssm"
  description   = "Parameter Store Change events forwarded to the ssm-resync central event bus"
  event_pattern = jsonencode(local.ssm_event_pattern)
  tags          = var.tags
}

resource "aws_cloudwatch_event_rule" "secrets_manager_native" {
  count         = var.enable_secrets_manager ? 1 : 0
  name          = "${var.name}-secretsmanager"
  description   = "Secrets Manager native events forwarded to the ssm-resync central event bus"
  event_pattern = jsonencode(local.secrets_manager_native_pattern)
  tags          = var.tags
}

resource "aws_cloudwatch_event_rule" "secrets_manager_api" {
  count         = var.enable_secrets_manager ? 1 : 0
  name          = "${var.name}-secretsmanager-api"
  description   = "Secrets Manager write calls (CloudTrail) forwarded to the ssm-resync central event bus"
  event_pattern = jsonencode(local.secrets_manager_api_pattern)
  tags          = var.tags
}

resource "aws_cloudwatch_event_rule" "ssm_api" {
  count         = var.enable_parameter_store_cloudtrail ? 1 : 0
  name          = "${var.name}-ssm-cloudtrail"
  description   = "Parameter Store calls the native event does not report (CloudTrail), forwarded to the ssm-resync central event bus"
  event_pattern = jsonencode(local.ssm_api_pattern)
  tags          = var.tags
}

# --- targets: the central bus, through the role ----------------------------------------------

# A PutEvents the central bus refuses (its policy does not admit this account, or not this
# source or detail-type) or that keeps failing is retried for up to an hour, then parked in
# this region's dead-letter queue, whose alarm says so: a forwarding mistake is never silent.
resource "aws_cloudwatch_event_target" "ssm" {
  rule      = aws_cloudwatch_event_rule.ssm.name
  target_id = "ssm-resync-central-bus"
  arn       = var.central_event_bus_arn
  role_arn  = aws_iam_role.forward.arn

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
  target_id = "ssm-resync-central-bus"
  arn       = var.central_event_bus_arn
  role_arn  = aws_iam_role.forward.arn

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
  target_id = "ssm-resync-central-bus"
  arn       = var.central_event_bus_arn
  role_arn  = aws_iam_role.forward.arn

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
  target_id = "ssm-resync-central-bus"
  arn       = var.central_event_bus_arn
  role_arn  = aws_iam_role.forward.arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }
}
