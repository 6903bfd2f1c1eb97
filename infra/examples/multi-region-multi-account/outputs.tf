output "topic_arn" {
  description = "The one topic of every region and account: SSM_RESYNC_TOPIC_ARN (--topic-arn) in k8s/overlays/eks/config.env."
  value       = module.ssm_resync.topic_arn
}

output "role_arn" {
  description = "Put into k8s/overlays/eks/serviceaccount-irsa.yaml (eks.amazonaws.com/role-arn)."
  value       = module.ssm_resync.role_arn
}

output "eso_account" {
  description = "SSM_RESYNC_ESO_ACCOUNT (--eso-account) when ESO's own credentials are in the central account: stores without a role then match only its changes."
  value       = var.central_account_id
}

output "event_bus_arn" {
  description = "The central default bus every forwarder puts its events on."
  value       = module.ssm_resync.event_bus_arn
}

output "dlq_url" {
  description = "Central dead-letter queue of undeliverable notifications and events."
  value       = module.ssm_resync.dlq_url
}

output "forwarder_dlq_urls" {
  description = "Each forwarder's dead-letter queue of events the central bus did not take, by account/region."
  value = {
    "${var.central_account_id}/${var.extra_region}"  = module.forward_central_extra_region.dlq_url
    "${var.member_account_id}/${var.central_region}" = module.forward_member.dlq_url
    "${var.member_account_id}/${var.extra_region}"   = module.forward_member_extra_region.dlq_url
  }
}

output "forwarder_role_arns" {
  description = "The roles EventBridge assumes to put events on the central bus, by account/region."
  value = {
    "${var.central_account_id}/${var.extra_region}"  = module.forward_central_extra_region.role_arn
    "${var.member_account_id}/${var.central_region}" = module.forward_member.role_arn
    "${var.member_account_id}/${var.extra_region}"   = module.forward_member_extra_region.role_arn
  }
}

output "subscription_arn" {
  description = "The HTTPS subscription (after the second apply)."
  value       = module.ssm_resync.subscription_arn
}

output "queue_url" {
  description = "delivery = \"queue\" or \"both\": SSM_RESYNC_SQS_QUEUE_URL (--sqs-queue-url) in k8s/overlays/eks-private/config.env (null with \"webhook\")."
  value       = module.ssm_resync.queue_url
}
