variable "central_account_id" {
  description = "Account of the topic, the cluster and the service (the default AWS credentials must be in it)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.central_account_id))
    error_message = "central_account_id must be a 12-digit account id."
  }
}

variable "central_region" {
  description = "Region of the topic and the cluster; its default event bus receives every other region's and account's events."
  type        = string
}

variable "extra_region" {
  description = "A second region whose parameters (and secrets) ESO reads, in both accounts."
  type        = string

  validation {
    condition     = var.extra_region != var.central_region
    error_message = "extra_region must differ from central_region (the central region needs no forwarder in the central account)."
  }
}

variable "member_account_id" {
  description = "Member account whose parameters (and secrets) ESO reads through a store's role."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.member_account_id))
    error_message = "member_account_id must be a 12-digit account id."
  }
}

variable "member_role_arn" {
  description = "Role Terraform assumes in the member account to create its forwarders (rules, an IAM role, an SQS queue, an alarm), e.g. arn:aws:iam::111122223333:role/OrganizationAccountAccessRole."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.member_role_arn))
    error_message = "member_role_arn must be an IAM role ARN."
  }
}

variable "member_permissions_boundary_arn" {
  description = "Permissions boundary the member account requires on new roles, if any."
  type        = string
  default     = null
}

variable "organization_id" {
  description = "Admit every account of this AWS Organization (o-...) to the central bus instead of only member_account_id; null: only member_account_id."
  type        = string
  default     = null
}

variable "cluster_name" {
  description = "EKS cluster the service runs in, in the central account and region (its IAM OIDC provider is looked up)."
  type        = string
}

variable "parameter_name_prefixes" {
  description = "Forward only these parameter name prefixes, in every region and account; empty for all."
  type        = list(string)
  default     = []
}

variable "enable_secrets_manager" {
  description = "Forward Secrets Manager changes too, in every region and account (the CloudTrail ones need a trail in each)."
  type        = bool
  default     = false
}

variable "enable_parameter_store_cloudtrail" {
  description = "Forward the Parameter Store calls the native event does not report (CloudTrail), in every region and account."
  type        = bool
  default     = false
}

variable "delivery" {
  description = "\"webhook\" (SNS -> HTTPS), \"queue\" (SNS -> SQS, pulled by a private cluster) or \"both\" (infra/modules/ssm-resync)."
  type        = string
  default     = "webhook"
}

variable "subscription_endpoint" {
  description = "https://<ALB host>/sns once the service is deployed; null on the first apply."
  type        = string
  default     = null
}

variable "alarm_actions" {
  description = "Where the central dead-letter queue alarm goes (e.g. an SNS topic of your pager)."
  type        = list(string)
  default     = []
}
