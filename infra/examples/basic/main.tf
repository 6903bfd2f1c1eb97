# delivery = "webhook" (the default): two applies (docs/deploy.md): first without
# subscription_endpoint (topic, rules, role), then deploy k8s/overlays/eks with the outputs,
# then apply again with the endpoint so SNS sends the SubscriptionConfirmation to a running
# service.
#
# delivery = "queue" (a private cluster SNS cannot reach): one apply (topic, rules, queue and
# its dead-letter queue, role), then deploy k8s/overlays/eks-private with the outputs
# topic_arn, queue_url and role_arn. The queue is subscribed at once and needs no
# confirmation; notifications published before the service runs wait in it.

provider "aws" {
  region = var.region
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

module "ssm_resync" {
  source = "../../modules/ssm-resync"

  name                    = "ssm-resync"
  parameter_name_prefixes = var.parameter_name_prefixes
  enable_secrets_manager  = false

  delivery              = var.delivery
  subscription_endpoint = var.subscription_endpoint
  alarm_actions         = var.alarm_actions
  ok_actions            = var.alarm_actions

  oidc_provider_arn         = data.aws_iam_openid_connect_provider.this.arn
  service_account_namespace = "ssm-resync"
  service_account_name      = "ssm-resync"

  tags = {
    app = "ssm-resync"
  }
}
