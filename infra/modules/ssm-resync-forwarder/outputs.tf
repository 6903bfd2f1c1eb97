output "rule_arns" {
  description = "ARNs of the EventBridge rules that forward to the central bus."
  value       = local.rule_arns
}

output "role_arn" {
  description = "ARN of the role EventBridge assumes to put events on the central bus (events:PutEvents on it, nothing else)."
  value       = aws_iam_role.forward.arn
}

output "dlq_arn" {
  description = "ARN of this region's dead-letter queue of events the central bus did not take."
  value       = aws_sqs_queue.dlq.arn
}

output "dlq_url" {
  description = "URL of the dead-letter queue (to inspect the events and the error EventBridge attached)."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_alarm_arn" {
  description = "ARN of the CloudWatch alarm on the dead-letter queue."
  value       = aws_cloudwatch_metric_alarm.dlq.arn
}
