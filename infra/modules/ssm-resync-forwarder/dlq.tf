# Events this region could not put on the central bus, and the alarm on them.

resource "aws_sqs_queue" "dlq" {
  name                      = "${var.name}-forward-dlq"
  message_retention_seconds = var.dlq_message_retention_seconds
  # SSE with SQS-owned keys: EventBridge can write to it without a key policy.
  sqs_managed_sse_enabled = true
  tags                    = var.tags
}

data "aws_iam_policy_document" "dlq" {
  statement {
    sid     = "EventBridgeDeadLetterFromRules"
    effect  = "Allow"
    actions = ["sqs:SendMessage"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    resources = [aws_sqs_queue.dlq.arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = local.rule_arns
    }
  }
}

resource "aws_sqs_queue_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id
  policy    = data.aws_iam_policy_document.dlq.json
}

resource "aws_cloudwatch_metric_alarm" "dlq" {
  alarm_name          = "${var.name}-forward-dlq-not-empty"
  alarm_description   = "Change events of ${local.account}/${local.region} could not be put on the central event bus ${var.central_event_bus_arn} (its bus policy, this role, or throttling) and were parked in ${aws_sqs_queue.dlq.name}: the ExternalSecrets they concern were not force-synced. Runbook: docs/deploy.md#forwarder-dead-letter-queue"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq.name }
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
