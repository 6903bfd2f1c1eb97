output "topic_arn" {
  description = "ARN of the SNS topic: the service's --topic-arn (SSM_RESYNC_TOPIC_ARN in the ConfigMap)."
  value       = aws_sns_topic.this.arn
}

output "role_arn" {
  description = "ARN of the IRSA role: the ServiceAccount's eks.amazonaws.com/role-arn annotation (null when create_irsa_role is false)."
  value       = one(aws_iam_role.irsa[*].arn)
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue of undeliverable notifications and events."
  value       = aws_sqs_queue.dlq.arn
}

output "dlq_url" {
  description = "URL of the dead-letter queue (to inspect or redrive messages)."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_alarm_arn" {
  description = "ARN of the CloudWatch alarm on the dead-letter queue."
  value       = aws_cloudwatch_metric_alarm.dlq.arn
}

output "subscription_arn" {
  description = "ARN of the HTTPS subscription (null without subscription_endpoint, and with delivery \"queue\")."
  value       = one(aws_sns_topic_subscription.https[*].arn)
}

output "rule_arns" {
  description = "ARNs of the EventBridge rules that publish to the topic."
  value       = local.rule_arns
}

output "event_bus_arn" {
  description = "ARN of this account's default event bus in this region: the central_event_bus_arn of every infra/modules/ssm-resync-forwarder (other regions of this account, member accounts)."
  value       = local.event_bus_arn
}

output "event_bus_policy_json" {
  description = "The default bus's resource policy that admits the other accounts (null without source_account_ids and organization_id). Merge it into your own when manage_event_bus_policy is false."
  value       = one(data.aws_iam_policy_document.event_bus[*].json)
}

# --- the queue path (null with delivery "webhook") -----------------------------------------

output "queue_url" {
  description = "URL of the queue the service pulls: its --sqs-queue-url (SSM_RESYNC_SQS_QUEUE_URL in the ConfigMap). null with delivery \"webhook\"."
  value       = one(aws_sqs_queue.queue[*].url)
}

output "queue_arn" {
  description = "ARN of the queue (the IRSA role may receive, delete, change visibility and read attributes on it, nothing else). null with delivery \"webhook\"."
  value       = one(aws_sqs_queue.queue[*].arn)
}

output "queue_dlq_arn" {
  description = "ARN of the queue's dead-letter queue: notifications the service could not apply in queue_max_receive_count receives. null with delivery \"webhook\"."
  value       = one(aws_sqs_queue.queue_dlq[*].arn)
}

output "queue_dlq_url" {
  description = "URL of the queue's dead-letter queue (to inspect, or to move messages back to the queue). null with delivery \"webhook\"."
  value       = one(aws_sqs_queue.queue_dlq[*].url)
}

output "queue_alarm_arns" {
  description = "ARNs of the queue's alarms: its dead-letter queue not empty, its oldest message too old. Empty with delivery \"webhook\"."
  value = concat(
    aws_cloudwatch_metric_alarm.queue_dlq[*].arn,
    aws_cloudwatch_metric_alarm.queue_stale[*].arn,
  )
}
