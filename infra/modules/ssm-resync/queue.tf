# The queue path (delivery = "queue" or "both"): for clusters SNS cannot reach, the topic's
# notifications wait in an SQS queue that the service pulls (`serve --webhook off
# --sqs-queue-url <queue_url>`). Raw message delivery stays off, so each message is the
# signed SNS envelope and the service verifies it exactly as the webhook does.
#
#   topic ──sqs──► <name>-queue ──(maxReceiveCount)──► <name>-queue-dlq ──► alarm
#     │                 ▲   └──► alarm <name>-queue-stale (oldest message too old)
#     └─ (SNS cannot deliver) ──► <name>-dlq, as for the webhook
#   rules ──(eventbridge_direct_to_queue)──┘ unsigned, instead of the subscription
#
# Both queues use SQS-managed SSE: SNS and EventBridge can send to it without a key policy,
# and the service reads it without kms:Decrypt, which its role denies itself (iam.tf).

locals {
  queue_enabled = contains(["queue", "both"], var.delivery)
  https_enabled = contains(["webhook", "both"], var.delivery)

  # The queue is fed either by the topic (signed envelopes) or, directly, by the rules
  # (unsigned events): both at once would bring each change twice, once without a signature.
  queue_from_topic = local.queue_enabled && !var.eventbridge_direct_to_queue
  queue_from_rules = local.queue_enabled && var.eventbridge_direct_to_queue

  # The rules that target the queue directly, by a key known at plan time.
  queue_target_rules = local.queue_from_rules ? merge(
    { ssm = aws_cloudwatch_event_rule.ssm.name },
    var.enable_secrets_manager ? {
      secrets_manager_native = aws_cloudwatch_event_rule.secrets_manager_native[0].name
      secrets_manager_api    = aws_cloudwatch_event_rule.secrets_manager_api[0].name
    } : {},
    var.enable_parameter_store_cloudtrail ? { ssm_api = aws_cloudwatch_event_rule.ssm_api[0].name } : {},
  ) : {}
}

resource "aws_sqs_queue" "queue" {
  count = local.queue_enabled ? 1 : 0
  name  = "${var.name}-queue"

  # The maximum by default: a notification may wait out an outage of the cluster or the
  # service, which receives nothing while it is down or not ready.
  message_retention_seconds = var.queue_message_retention_seconds
  # The service asks for its own --sqs-visibility-timeout (30 s) on every receive and renews
  # it while a message's patches run; this default only serves other readers (an operator's
  # `aws sqs receive-message`).
  visibility_timeout_seconds = 30
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.queue_dlq[0].arn
    maxReceiveCount     = var.queue_max_receive_count
  })

  tags = var.tags

  lifecycle {
    precondition {
      # A dead-letter queue counts a message's retention from its first enqueue time: a
      # shorter one would delete what the queue hands it on arrival.
      condition     = var.dlq_message_retention_seconds >= var.queue_message_retention_seconds
      error_message = "dlq_message_retention_seconds must be at least queue_message_retention_seconds."
    }
    precondition {
      condition     = var.delivery != "queue" || var.subscription_endpoint == null
      error_message = "delivery = \"queue\" creates no HTTPS subscription: unset subscription_endpoint (or use delivery = \"both\")."
    }
  }
}

# Messages the service could not apply in queue_max_receive_count receives.
resource "aws_sqs_queue" "queue_dlq" {
  count                     = local.queue_enabled ? 1 : 0
  name                      = "${var.name}-queue-dlq"
  message_retention_seconds = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

# Only the queue may use it as its dead-letter queue. Its messages all come from there, so
# a redrive (StartMessageMoveTask without a destination) puts them back where they came from.
resource "aws_sqs_queue_redrive_allow_policy" "queue_dlq" {
  count     = local.queue_enabled ? 1 : 0
  queue_url = aws_sqs_queue.queue_dlq[0].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.queue[0].arn]
  })
}

# --- who may send to the queue ------------------------------------------------------------

data "aws_iam_policy_document" "queue_from_topic" {
  count = local.queue_from_topic ? 1 : 0

  statement {
    sid     = "SnsFromTopic"
    effect  = "Allow"
    actions = ["sqs:SendMessage"]
    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }
    resources = [aws_sqs_queue.queue[0].arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.this.arn]
    }
  }
}

data "aws_iam_policy_document" "queue_from_rules" {
  count = local.queue_from_rules ? 1 : 0

  statement {
    sid     = "EventBridgeFromRules"
    effect  = "Allow"
    actions = ["sqs:SendMessage"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    resources = [aws_sqs_queue.queue[0].arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = local.rule_arns
    }
  }

  # Unsigned events are trusted on this policy alone: an identity policy granting
  # sqs:SendMessage broadly (an administrator's, a CI role's) must not reach the queue.
  # Only SendMessage is denied, so administrators can still change this policy.
  statement {
    sid     = "DenySendExceptFromTheRules"
    effect  = "Deny"
    actions = ["sqs:SendMessage"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    resources = [aws_sqs_queue.queue[0].arn]
    condition {
      test     = "ArnNotEquals"
      variable = "aws:SourceArn"
      values   = local.rule_arns
    }
    dynamic "condition" {
      for_each = length(var.queue_sender_arns) > 0 ? [1] : []
      content {
        test     = "ArnNotLike"
        variable = "aws:PrincipalArn"
        values   = var.queue_sender_arns
      }
    }
  }
}

data "aws_iam_policy_document" "queue" {
  count = local.queue_enabled ? 1 : 0

  source_policy_documents = concat(
    data.aws_iam_policy_document.queue_from_topic[*].json,
    data.aws_iam_policy_document.queue_from_rules[*].json,
  )
}

resource "aws_sqs_queue_policy" "queue" {
  count     = local.queue_enabled ? 1 : 0
  queue_url = aws_sqs_queue.queue[0].id
  policy    = data.aws_iam_policy_document.queue[0].json
}

# --- what feeds the queue -------------------------------------------------------------------

# Raw delivery off: the body is the signed envelope. SNS parks what it cannot deliver to the
# queue (policy changed, queue deleted) in the front door's dead-letter queue, as for HTTPS.
resource "aws_sns_topic_subscription" "queue" {
  count                = local.queue_from_topic ? 1 : 0
  topic_arn            = aws_sns_topic.this.arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.queue[0].arn
  raw_message_delivery = false
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
  })

  depends_on = [aws_sqs_queue_policy.queue, aws_sqs_queue_policy.dlq]
}

# eventbridge_direct_to_queue: each rule also puts its events on the queue, retrying for an
# hour and then parking them in the front door's dead-letter queue, like its topic target.
resource "aws_cloudwatch_event_target" "queue" {
  for_each  = local.queue_target_rules
  rule      = each.value
  target_id = "ssm-resync-sqs"
  arn       = aws_sqs_queue.queue[0].arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }

  depends_on = [aws_sqs_queue_policy.queue]
}

# --- alarms -----------------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "queue_dlq" {
  count               = local.queue_enabled ? 1 : 0
  alarm_name          = "${var.name}-queue-dlq-not-empty"
  alarm_description   = "Notifications the service received from ${aws_sqs_queue.queue[0].name} but could not apply in ${var.queue_max_receive_count} receives were moved to ${aws_sqs_queue.queue_dlq[0].name}: the ExternalSecrets they concern were not force-synced. Fix the cause, then move them back (they are applied whatever their age). Runbook: docs/runbook.md#ssmresyncqueuedlqnotempty"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.queue_dlq[0].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.ok_actions
  tags                = var.tags
}

# Nothing receives: the service is down, not ready, or denied by IAM. CloudWatch sees it
# when the cluster, and the Prometheus in it, cannot.
resource "aws_cloudwatch_metric_alarm" "queue_stale" {
  count               = local.queue_enabled ? 1 : 0
  alarm_name          = "${var.name}-queue-stale"
  alarm_description   = "The oldest notification in ${aws_sqs_queue.queue[0].name} has waited more than ${var.queue_oldest_message_alarm_seconds} s: nothing is receiving from the queue, so changes are not reaching the cluster (they wait up to the queue's retention). Runbook: docs/runbook.md#ssmresyncqueuestale"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.queue[0].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.queue_oldest_message_alarm_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.ok_actions
  tags                = var.tags
}
