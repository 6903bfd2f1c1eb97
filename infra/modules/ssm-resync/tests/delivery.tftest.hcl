# `terraform test` of what each delivery plans, against a mocked AWS provider (no account, no
# credentials; `apply` runs only against the mocks): which resources exist for "webhook", "queue" and "both", and which settings
# are refused. scripts/check-deploy.sh runs it where terraform and a local copy of the AWS
# provider are installed; tests/deploy/test_infra.py checks the same module statically.

mock_provider "aws" {
  mock_data "aws_cloudwatch_event_bus" {
    defaults = {
      arn  = "arn:aws:events:eu-west-1:123456789012:event-bus/default"
      name = "default"
    }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:eu-west-1:123456789012:ssm-resync" }
  }
  mock_resource "aws_sqs_queue" {
    defaults = {
      arn = "arn:aws:sqs:eu-west-1:123456789012:ssm-resync-queue"
      url = "https://sqs.eu-west-1.amazonaws.com/123456789012/ssm-resync-queue"
    }
  }
  mock_resource "aws_cloudwatch_event_rule" {
    defaults = { arn = "arn:aws:events:eu-west-1:123456789012:rule/ssm-resync-ssm" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/ssm-resync-irsa" }
  }
}

variables {
  oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
}

run "webhook_by_default_plans_no_queue" {
  command = apply
  variables {
    subscription_endpoint = "https://ssm-resync.example.com/sns"
  }

  assert {
    condition     = length(aws_sns_topic_subscription.https) == 1 && aws_sns_topic_subscription.https[0].protocol == "https"
    error_message = "the default delivery must keep the HTTPS subscription"
  }
  assert {
    condition = (
      length(aws_sqs_queue.queue) + length(aws_sqs_queue.queue_dlq) + length(aws_sqs_queue_policy.queue) +
      length(aws_sns_topic_subscription.queue) + length(aws_cloudwatch_metric_alarm.queue_dlq) +
      length(aws_cloudwatch_metric_alarm.queue_stale) + length(aws_cloudwatch_event_target.queue) +
      length(data.aws_iam_policy_document.service_queue)
    ) == 0
    error_message = "the webhook delivery must plan nothing of the queue path"
  }
  assert {
    condition     = output.queue_url == null && output.queue_arn == null && output.queue_dlq_arn == null
    error_message = "queue outputs must be null without a queue"
  }
  assert {
    condition     = aws_sns_topic.this.signature_version == 2
    error_message = "the topic must sign with SHA256"
  }
}

run "queue_plans_the_queue_and_no_https_subscription" {
  command = apply
  variables {
    delivery = "queue"
  }

  assert {
    condition     = length(aws_sns_topic_subscription.https) == 0
    error_message = "delivery = queue must not subscribe an HTTPS endpoint"
  }
  assert {
    condition = (
      aws_sns_topic_subscription.queue[0].protocol == "sqs" &&
      aws_sns_topic_subscription.queue[0].raw_message_delivery == false &&
      aws_sns_topic_subscription.queue[0].endpoint == "arn:aws:sqs:eu-west-1:123456789012:ssm-resync-queue"
    )
    error_message = "the queue must be subscribed with raw delivery off"
  }
  assert {
    condition = (
      aws_sqs_queue.queue[0].sqs_managed_sse_enabled && aws_sqs_queue.queue_dlq[0].sqs_managed_sse_enabled &&
      aws_sqs_queue.queue[0].message_retention_seconds == 1209600 &&
      jsondecode(aws_sqs_queue.queue[0].redrive_policy).maxReceiveCount == 10
    )
    error_message = "the queue and its dead-letter queue: SSE, 14 days, maxReceiveCount 10"
  }
  assert {
    condition     = jsondecode(aws_sqs_queue_redrive_allow_policy.queue_dlq[0].redrive_allow_policy).redrivePermission == "byQueue"
    error_message = "the dead-letter queue must admit only the queue as a source"
  }
  assert {
    condition = (
      length(aws_cloudwatch_metric_alarm.queue_dlq) == 1 && length(aws_cloudwatch_metric_alarm.queue_stale) == 1 &&
      length(data.aws_iam_policy_document.service_queue) == 1 && length(aws_cloudwatch_event_target.queue) == 0
    )
    error_message = "queue: both alarms and the role's queue grant, no direct targets"
  }
  assert {
    condition     = output.queue_url == "https://sqs.eu-west-1.amazonaws.com/123456789012/ssm-resync-queue"
    error_message = "output queue_url"
  }
}

run "both_keeps_the_https_subscription_beside_the_queue" {
  command = apply
  variables {
    delivery              = "both"
    subscription_endpoint = "https://ssm-resync.example.com/sns"
  }

  assert {
    condition     = length(aws_sns_topic_subscription.https) == 1 && length(aws_sns_topic_subscription.queue) == 1
    error_message = "both: the HTTPS and the SQS subscriptions"
  }
}

run "eventbridge_direct_replaces_the_queue_subscription" {
  command = apply
  variables {
    delivery                          = "queue"
    eventbridge_direct_to_queue       = true
    enable_secrets_manager            = true
    enable_parameter_store_cloudtrail = true
  }

  assert {
    condition     = length(aws_cloudwatch_event_target.queue) == 4 && length(aws_sns_topic_subscription.queue) == 0
    error_message = "every rule targets the queue, which is not subscribed to the topic"
  }
}

run "a_queue_only_module_refuses_an_https_endpoint" {
  command = plan
  variables {
    delivery              = "queue"
    subscription_endpoint = "https://ssm-resync.example.com/sns"
  }
  expect_failures = [aws_sqs_queue.queue]
}

run "eventbridge_direct_needs_a_queue" {
  command = plan
  variables {
    eventbridge_direct_to_queue = true
  }
  expect_failures = [aws_sns_topic.this]
}

run "the_dead_letter_queue_keeps_messages_at_least_as_long" {
  command = plan
  variables {
    delivery                      = "queue"
    dlq_message_retention_seconds = 345600
  }
  expect_failures = [aws_sqs_queue.queue]
}

run "an_unknown_delivery_is_refused" {
  command = plan
  variables {
    delivery = "sqs"
  }
  expect_failures = [var.delivery]
}
