variable "name" {
  description = "Prefix of every resource (rules, role, dead-letter queue, alarm). The rules are named like infra/modules/ssm-resync's (<name>-ssm, ...); the role is <name>-forward-<region>, as IAM names are global to the account."
  type        = string
  default     = "ssm-resync"

  validation {
    # EventBridge rule names are at most 64 characters with "-secretsmanager-api"; IAM role
    # names 64 with "-forward-<region>" (regions are at most 14 characters).
    condition     = can(regex("^[A-Za-z0-9_-]{1,40}$", var.name))
    error_message = "name must be 1-40 characters of A-Z, a-z, 0-9, '-' or '_'."
  }
}

variable "tags" {
  description = "Tags applied to every taggable resource."
  type        = map(string)
  default     = {}
}

variable "central_event_bus_arn" {
  description = <<-EOT
    The default event bus of the central account and region, where infra/modules/ssm-resync
    runs: its output event_bus_arn, arn:aws:events:<central-region>:<central-account>:event-bus/default.
    From another account, that module needs this account in source_account_ids or its
    organization in organization_id (the bus policy); from another region of the same account
    nothing more.
  EOT
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:events:[a-z0-9-]+:[0-9]{12}:event-bus/default$", var.central_event_bus_arn))
    error_message = "central_event_bus_arn must be the ARN of a default event bus, arn:aws:events:<region>:<account>:event-bus/default (infra/modules/ssm-resync's rules are on the default bus)."
  }
}

# --- what is forwarded: the same variables, defaults and validation as infra/modules/ssm-resync
# (tests/deploy/test_infra.py asserts it). Give both the same values: an event the central
# rules do not match is dropped there, and one the central bus policy does not admit lands in
# this module's dead-letter queue.

variable "ssm_operations" {
  description = "Parameter Store Change operations forwarded to the service."
  type        = list(string)
  default     = ["Create", "Update", "Delete", "LabelParameterVersion"]

  validation {
    condition = length(var.ssm_operations) > 0 && alltrue([
      for op in var.ssm_operations : contains(["Create", "Update", "Delete", "LabelParameterVersion"], op)
    ])
    error_message = "ssm_operations must be a non-empty subset of Create, Update, Delete, LabelParameterVersion."
  }
}

variable "parameter_name_prefixes" {
  description = <<-EOT
    Forward only parameters whose name starts with one of these prefixes (EventBridge content
    filtering on detail.name, e.g. ["/prod/", "/shared/"]). Empty: every parameter of the
    account and region. Parameter names are matched as AWS reports them: hierarchical names
    start with "/".
  EOT
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.parameter_name_prefixes : length(p) > 0])
    error_message = "parameter_name_prefixes must not contain empty strings (an empty list already means every parameter)."
  }
}

variable "enable_secrets_manager" {
  description = <<-EOT
    Also forward Secrets Manager changes: the native "Secret Label Updated" event and
    "AWS API Call via CloudTrail" for the write calls in secrets_manager_event_names. The
    CloudTrail events reach EventBridge only when a CloudTrail trail records management events
    in the region.
  EOT
  type        = bool
  default     = false
}

variable "secrets_manager_event_names" {
  description = <<-EOT
    Secrets Manager API calls (CloudTrail eventName) forwarded when enable_secrets_manager is
    true: every call that changes what a reader gets (CreateSecret for `find` readers,
    TagResource/UntagResource for `find.tags` and `metadataPolicy: Fetch` readers, the
    replication calls for readers of replica regions).
  EOT
  type        = list(string)
  default     = ["CreateSecret", "PutSecretValue", "UpdateSecret", "RotateSecret", "DeleteSecret", "RestoreSecret", "UpdateSecretVersionStage", "TagResource", "UntagResource", "ReplicateSecretToRegions", "RemoveRegionsFromReplication"]

  validation {
    condition = length(var.secrets_manager_event_names) > 0 && alltrue([
      for n in var.secrets_manager_event_names : contains(["CreateSecret", "PutSecretValue", "UpdateSecret", "RotateSecret", "DeleteSecret", "RestoreSecret", "UpdateSecretVersionStage", "TagResource", "UntagResource", "ReplicateSecretToRegions", "RemoveRegionsFromReplication"], n)
    ])
    error_message = "secrets_manager_event_names must be a non-empty subset of CreateSecret, PutSecretValue, UpdateSecret, RotateSecret, DeleteSecret, RestoreSecret, UpdateSecretVersionStage, TagResource, UntagResource, ReplicateSecretToRegions, RemoveRegionsFromReplication."
  }
}

variable "enable_parameter_store_cloudtrail" {
  description = <<-EOT
    Also forward the Parameter Store calls the native "Parameter Store Change" event does not
    report, from CloudTrail: UnlabelParameterVersion (readers of a label), DeleteParameters
    (plural), and tag changes (readers of `find.tags` and `metadataPolicy: Fetch`). CloudTrail
    events reach EventBridge only when a CloudTrail trail records management events in the
    region.
  EOT
  type        = bool
  default     = false
}

variable "parameter_store_cloudtrail_event_names" {
  description = "Parameter Store API calls (CloudTrail eventName) forwarded when enable_parameter_store_cloudtrail is true. PutParameter, DeleteParameter and LabelParameterVersion are allowed for accounts that forward CloudTrail only; with the native rule too they repeat what it reports."
  type        = list(string)
  default     = ["UnlabelParameterVersion", "DeleteParameters", "AddTagsToResource", "RemoveTagsFromResource"]

  validation {
    condition = length(var.parameter_store_cloudtrail_event_names) > 0 && alltrue([
      for n in var.parameter_store_cloudtrail_event_names : contains(["UnlabelParameterVersion", "DeleteParameters", "AddTagsToResource", "RemoveTagsFromResource", "PutParameter", "DeleteParameter", "LabelParameterVersion"], n)
    ])
    error_message = "parameter_store_cloudtrail_event_names must be a non-empty subset of UnlabelParameterVersion, DeleteParameters, AddTagsToResource, RemoveTagsFromResource, PutParameter, DeleteParameter, LabelParameterVersion."
  }
}

# --- dead-letter queue and its alarm ----------------------------------------------------

variable "dlq_message_retention_seconds" {
  description = "How long events the central bus did not take stay in the dead-letter queue (SQS allows 60 s to 14 days)."
  type        = number
  default     = 1209600

  validation {
    condition     = var.dlq_message_retention_seconds >= 60 && var.dlq_message_retention_seconds <= 1209600
    error_message = "dlq_message_retention_seconds must be between 60 and 1209600 (14 days)."
  }
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic of your paging system) notified when the dead-letter queue is not empty."
  type        = list(string)
  default     = []
}

variable "ok_actions" {
  description = "ARNs notified when the dead-letter queue alarm returns to OK."
  type        = list(string)
  default     = []
}

# --- IAM -------------------------------------------------------------------------------

variable "permissions_boundary_arn" {
  description = "Permissions boundary attached to the forwarding role, if your account requires one."
  type        = string
  default     = null
}
