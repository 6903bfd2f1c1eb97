# One topic, one subscription, events from two regions of two accounts (docs/deploy.md, "Many
# regions, many accounts"):
#
#   central account, central_region   infra/modules/ssm-resync: topic, rules, subscription,
#                                     IRSA role, and the default bus's policy admitting the
#                                     member account (or the whole organization)
#   central account, extra_region     forwarder -> central bus (same account: no bus policy)
#   member account,  central_region   forwarder -> central bus (cross-account)
#   member account,  extra_region     forwarder -> central bus (cross-account and -region)
#
# Two applies as in infra/examples/basic: first without subscription_endpoint, then with it
# once the service runs with --topic-arn = output topic_arn. With delivery = "queue", one apply
# and the service pulls output queue_url (k8s/overlays/eks-private).

provider "aws" {
  region              = var.central_region
  allowed_account_ids = [var.central_account_id]
}

provider "aws" {
  alias               = "central_extra_region"
  region              = var.extra_region
  allowed_account_ids = [var.central_account_id]
}

provider "aws" {
  alias               = "member"
  region              = var.central_region
  allowed_account_ids = [var.member_account_id]

  assume_role {
    role_arn = var.member_role_arn
  }
}

provider "aws" {
  alias               = "member_extra_region"
  region              = var.extra_region
  allowed_account_ids = [var.member_account_id]

  assume_role {
    role_arn = var.member_role_arn
  }
}

locals {
  # Every instance forwards and matches the same events: what a forwarder sends and the
  # central rules do not match is dropped, and what the bus policy does not admit is parked
  # in the forwarder's dead-letter queue.
  name                              = "ssm-resync"
  parameter_name_prefixes           = var.parameter_name_prefixes
  enable_secrets_manager            = var.enable_secrets_manager
  enable_parameter_store_cloudtrail = var.enable_parameter_store_cloudtrail
  tags = {
    app = "ssm-resync"
  }
}

# --- central account, central region ------------------------------------------------------

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

module "ssm_resync" {
  source = "../../modules/ssm-resync"

  name                              = local.name
  parameter_name_prefixes           = local.parameter_name_prefixes
  enable_secrets_manager            = local.enable_secrets_manager
  enable_parameter_store_cloudtrail = local.enable_parameter_store_cloudtrail

  # Member accounts may put these events on the default bus: the whole organization when
  # organization_id is set, else exactly the member account.
  organization_id    = var.organization_id
  source_account_ids = var.organization_id == null ? [var.member_account_id] : []

  # "queue" for a private cluster: the central queue then carries every region's and
  # account's changes, as the HTTPS subscription does.
  delivery              = var.delivery
  subscription_endpoint = var.subscription_endpoint
  alarm_actions         = var.alarm_actions
  ok_actions            = var.alarm_actions

  oidc_provider_arn         = data.aws_iam_openid_connect_provider.this.arn
  service_account_namespace = "ssm-resync"
  service_account_name      = "ssm-resync"

  tags = local.tags
}

# --- central account, extra region ----------------------------------------------------------

module "forward_central_extra_region" {
  source = "../../modules/ssm-resync-forwarder"
  providers = {
    aws = aws.central_extra_region
  }

  name                              = local.name
  central_event_bus_arn             = module.ssm_resync.event_bus_arn
  parameter_name_prefixes           = local.parameter_name_prefixes
  enable_secrets_manager            = local.enable_secrets_manager
  enable_parameter_store_cloudtrail = local.enable_parameter_store_cloudtrail

  tags = local.tags
}

# --- member account, both regions -------------------------------------------------------------

module "forward_member" {
  source = "../../modules/ssm-resync-forwarder"
  providers = {
    aws = aws.member
  }

  name                              = local.name
  central_event_bus_arn             = module.ssm_resync.event_bus_arn
  parameter_name_prefixes           = local.parameter_name_prefixes
  enable_secrets_manager            = local.enable_secrets_manager
  enable_parameter_store_cloudtrail = local.enable_parameter_store_cloudtrail
  permissions_boundary_arn          = var.member_permissions_boundary_arn

  tags = local.tags
}

module "forward_member_extra_region" {
  source = "../../modules/ssm-resync-forwarder"
  providers = {
    aws = aws.member_extra_region
  }

  name                              = local.name
  central_event_bus_arn             = module.ssm_resync.event_bus_arn
  parameter_name_prefixes           = local.parameter_name_prefixes
  enable_secrets_manager            = local.enable_secrets_manager
  enable_parameter_store_cloudtrail = local.enable_parameter_store_cloudtrail
  permissions_boundary_arn          = var.member_permissions_boundary_arn

  tags = local.tags
}
