# The HTTPS subscription (delivery = "webhook" or "both"), the front door's dead-letter queue
# (what SNS could not deliver to the endpoint or the queue, what EventBridge could not publish)
# and the alarm on that queue.

locals {
  # Subscription-level HTTP/S delivery policy. The service answers 5xx only when it could not
  # apply a change, so retries are worth making for as long as SNS allows (3600 s in all).
  delivery_policy = {
    healthyRetryPolicy = {
      numRetries         = var.delivery_retry.num_retries
      numNoDelayRetries  = var.delivery_retry.num_no_delay_retries
      numMinDelayRetries = var.delivery_retry.num_min_delay_retries
      numMaxDelayRetries = var.delivery_retry.num_max_delay_retries
      minDelayTarget     = var.delivery_retry.min_delay_target
      maxDelayTarget     = var.delivery_retry.max_delay_target
      backoffFunction    = "exponential"
    }
    throttlePolicy = {
      maxReceivesPerSecond = var.delivery_retry.max_receives_per_second
    }
  }
}

resource "aws_sns_topic_subscription" "https" {
  # delivery = "queue" creates none (a precondition in queue.tf refuses an endpoint there).
  count     = local.https_enabled && var.subscription_endpoint != null ? 1 : 0
  topic_arn = aws_sns_topic.this.arn
  protocol  = "https"
  endpoint  = var.subscription_endpoint

  # The service confirms by itself (ConfirmSubscription through its IRSA role) once it has
  # verified the SubscriptionConfirmation's signature and topic.
  endpoint_auto_confirms          = false
  confirmation_timeout_in_minutes = var.confirmation_timeout_in_minutes

  # Raw delivery drops the signature: the service rejects it.
  raw_message_delivery = false
  delivery_policy      = jsonencode(local.delivery_policy)
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
  })

  depends_on = [aws_sqs_queue_policy.dlq]
}

resource "aws_sqs_queue" "dlq" {
  name                      = "${var.name}-dlq"
  message_retention_seconds = var.dlq_message_retention_seconds
  # SSE with SQS-owned keys: SNS and EventBridge can write to it without a key policy.
  sqs_managed_sse_enabled = true
  tags                    = var.tags
}

data "aws_iam_policy_document" "dlq" {
  statement {
    sid     = "SnsRedriveFromTopic"
    effect  = "Allow"
    actions = ["sqs:SendMessage"]
    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }
    resources = [aws_sqs_queue.dlq.arn]
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.this.arn]
    }
  }

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
  alarm_name          = "${var.name}-dlq-not-empty"
  alarm_description   = "Change events or SNS notifications could not be delivered to ssm-resync and were parked in ${aws_sqs_queue.dlq.name}: the ExternalSecrets they concern were not force-synced. Runbook: docs/runbook.md#ssmresyncdlqnotempty"
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
