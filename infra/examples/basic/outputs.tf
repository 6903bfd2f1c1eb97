output "topic_arn" {
  description = "Put into k8s/overlays/eks/config.env as SSM_RESYNC_TOPIC_ARN."
  value       = module.ssm_resync.topic_arn
}

output "role_arn" {
  description = "Put into k8s/overlays/eks/serviceaccount-irsa.yaml (eks.amazonaws.com/role-arn)."
  value       = module.ssm_resync.role_arn
}

output "dlq_url" {
  description = "Dead-letter queue of notifications SNS could not deliver and events EventBridge could not publish."
  value       = module.ssm_resync.dlq_url
}

output "subscription_arn" {
  description = "The HTTPS subscription (after the second apply)."
  value       = module.ssm_resync.subscription_arn
}

output "queue_url" {
  description = "delivery = \"queue\" or \"both\": put into k8s/overlays/eks-private/config.env as SSM_RESYNC_SQS_QUEUE_URL (null with \"webhook\")."
  value       = module.ssm_resync.queue_url
}

output "queue_dlq_url" {
  description = "delivery = \"queue\" or \"both\": dead-letter queue of notifications the service could not apply (null with \"webhook\")."
  value       = module.ssm_resync.queue_dlq_url
}
