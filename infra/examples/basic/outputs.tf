output "topic_arn" {
  description = "Put into k8s/overlays/eks/config.env as SSM_RESYNC_TOPIC_ARN."
  value       = module.ssm_resync.topic_arn
}

output "role_arn" {
  description = "Put into k8s/overlays/eks/serviceaccount-irsa.yaml (eks.amazonaws.com/role-arn)."
  value       = module.ssm_resync.role_arn
}

output "dlq_url" {
  description = "Dead-letter queue of undeliverable notifications."
  value       = module.ssm_resync.dlq_url
}

output "subscription_arn" {
  description = "The HTTPS subscription (after the second apply)."
  value       = module.ssm_resync.subscription_arn
}
