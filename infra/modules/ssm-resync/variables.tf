variable "name" {
  description = "Name of the SNS topic; also the prefix of every other resource (rules, DLQ, alarm, role)."
  type        = string
  default     = "ssm-resync"

  validation {
    # SQS names are at most 80 characters and the DLQ adds "-dlq"; EventBridge rules 64 with "-secretsmanager-api".
    condition     = can(regex("^[A-Za-z0-9_-]{1,40}$", var.name))
    error_message = "name must be 1-40 characters of A-Z, a-z, 0-9, '-' or '_'."
  }
}

variable "tags" {
  description = "Tags applied to every taggable resource."
  type        = map(string)
  default     = {}
}

# --- what is forwarded ------------------------------------------------------------

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

variable "topic_kms_master_key_id" {
  description = <<-EOT
    Customer-managed KMS key (ID or ARN) to encrypt the topic with; null leaves it unencrypted
    (messages carry parameter names, never values). EventBridge can publish to an encrypted
    topic only when the key policy lets events.amazonaws.com use kms:GenerateDataKey and
    kms:Decrypt: the AWS-managed alias/aws/sns key does not work.
  EOT
  type        = string
  default     = null
}

variable "topic_publisher_arns" {
  description = <<-EOT
    IAM principal ARNs (wildcards allowed, e.g. a smoke-test role) still allowed to publish to
    the topic by their own identity policies. Empty (the default): only this module's
    EventBridge rules can publish; the topic policy denies sns:Publish to everyone else,
    administrators included (they keep every other action, so they can change the policy).
  EOT
  type        = list(string)
  default     = []
}

# --- events from other accounts --------------------------------------------------------

variable "source_account_ids" {
  description = <<-EOT
    Member accounts whose forwarders (infra/modules/ssm-resync-forwarder) put their events on
    this account's default event bus, e.g. ["111122223333"]. With this or organization_id set,
    the module gives the default bus a resource policy that lets these accounts (and only
    them, or the organization) events:PutEvents the sources and detail-types the rules here
    match. Empty (and organization_id null): no bus policy, today's behaviour. Other regions
    of this account need nothing here: same-account forwarding is authorised by the
    forwarder's role alone.
  EOT
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.source_account_ids : can(regex("^[0-9]{12}$", id))])
    error_message = "source_account_ids must be 12-digit AWS account ids."
  }
}

variable "organization_id" {
  description = <<-EOT
    AWS Organization (o-xxxxxxxxxx) whose accounts may put events on this account's default
    bus (condition aws:PrincipalOrgID), instead of or besides listing source_account_ids.
    null: no organization-wide grant.
  EOT
  type        = string
  default     = null

  validation {
    condition     = var.organization_id == null || can(regex("^o-[a-z0-9]{10,32}$", var.organization_id))
    error_message = "organization_id must look like o-a1b2c3d4e5 (10 to 32 lowercase letters or digits after o-)."
  }
}

variable "manage_event_bus_policy" {
  description = <<-EOT
    Create the default bus's resource policy (aws_cloudwatch_event_bus_policy) when
    source_account_ids or organization_id is set. That resource owns the bus's whole policy
    and replaces any other statement on it: when the default bus already has a policy
    managed elsewhere, set false and merge the output event_bus_policy_json into that policy
    (e.g. source_policy_documents of its aws_iam_policy_document).
  EOT
  type        = bool
  default     = true
}

# --- how notifications reach the service ------------------------------------------------

variable "delivery" {
  description = <<-EOT
    How the topic's notifications reach the service. "webhook" (the default): an HTTPS
    subscription to the service's public POST /sns (subscription_endpoint). "queue": an SQS
    queue subscribed to the topic, which the service pulls (`serve --webhook off
    --sqs-queue-url <output queue_url>`), for clusters SNS cannot reach (SNS does not deliver
    to private endpoints); no HTTPS subscription is created. "both": the two side by side,
    e.g. while moving from one to the other: each change then arrives by both doors with
    the same SNS MessageId, which a replica that sees both applies once; two replicas may
    each force-sync it once (harmless: a force-sync is idempotent).
  EOT
  type        = string
  default     = "webhook"

  validation {
    condition     = contains(["webhook", "queue", "both"], var.delivery)
    error_message = "delivery must be \"webhook\", \"queue\" or \"both\"."
  }
}

# --- the HTTPS subscription ---------------------------------------------------------

variable "subscription_endpoint" {
  description = <<-EOT
    Public HTTPS URL of the service's webhook, e.g. https://ssm-resync.example.com/sns (the
    ALB of k8s/overlays/eks). null creates no subscription: apply once without it, deploy the
    service with the topic ARN output, then set it (SNS sends the SubscriptionConfirmation
    at once and the service must be there to confirm it).
  EOT
  type        = string
  default     = null

  validation {
    condition     = var.subscription_endpoint == null || can(regex("^https://[^/?#@]+/sns$", var.subscription_endpoint))
    error_message = "subscription_endpoint must be an https:// URL whose path is exactly /sns (the only path the service answers)."
  }
}

variable "confirmation_timeout_in_minutes" {
  description = "How long Terraform waits for the subscription ARN of the HTTPS subscription (the service confirms it on its own)."
  type        = number
  default     = 5

  validation {
    condition     = var.confirmation_timeout_in_minutes >= 1 && var.confirmation_timeout_in_minutes <= 60
    error_message = "confirmation_timeout_in_minutes must be between 1 and 60."
  }
}

variable "delivery_retry" {
  description = <<-EOT
    healthyRetryPolicy of the HTTPS subscription. The service answers 503 when it could not
    apply a change (Kubernetes API unreachable), so SNS must keep retrying across an outage;
    SNS caps the whole retry policy at 3600 s. Defaults: 3 retries 5 s apart, 10 with
    exponential backoff from 5 s to 120 s, then 19 every 120 s: at most ~58 min in all,
    after which the message goes to the dead-letter queue. Keep the service's
    SSM_RESYNC_MAX_MESSAGE_AGE (default 1h) at least this long: older redeliveries are
    rejected as replays.
  EOT
  type = object({
    num_retries             = optional(number, 32)
    num_no_delay_retries    = optional(number, 0)
    num_min_delay_retries   = optional(number, 3)
    num_max_delay_retries   = optional(number, 19)
    min_delay_target        = optional(number, 5)
    max_delay_target        = optional(number, 120)
    max_receives_per_second = optional(number, 50)
  })
  default = {}

  validation {
    condition = (
      var.delivery_retry.num_retries >= 0 && var.delivery_retry.num_retries <= 100 &&
      var.delivery_retry.min_delay_target >= 1 &&
      var.delivery_retry.max_delay_target >= var.delivery_retry.min_delay_target &&
      var.delivery_retry.max_delay_target <= 3600 &&
      var.delivery_retry.num_no_delay_retries + var.delivery_retry.num_min_delay_retries + var.delivery_retry.num_max_delay_retries <= var.delivery_retry.num_retries &&
      var.delivery_retry.max_receives_per_second >= 1
    )
    error_message = "delivery_retry: numRetries 0..100, 1 <= min_delay_target <= max_delay_target <= 3600, the phase counts must not exceed num_retries, max_receives_per_second >= 1."
  }

  validation {
    # Upper bound of the whole window: every backoff-phase delay is at most max_delay_target.
    condition = (
      var.delivery_retry.num_min_delay_retries * var.delivery_retry.min_delay_target +
      (var.delivery_retry.num_retries - var.delivery_retry.num_no_delay_retries - var.delivery_retry.num_min_delay_retries) * var.delivery_retry.max_delay_target
    ) <= 3600
    error_message = "delivery_retry: the retry window (pre-backoff delays + remaining retries x max_delay_target) must stay within SNS's 3600 s limit."
  }
}

variable "dlq_message_retention_seconds" {
  description = "How long undeliverable notifications stay in the dead-letter queues, the front door's and the queue's (SQS allows 60 s to 14 days; counted from when a message first entered SQS)."
  type        = number
  default     = 1209600

  validation {
    condition     = var.dlq_message_retention_seconds >= 60 && var.dlq_message_retention_seconds <= 1209600
    error_message = "dlq_message_retention_seconds must be between 60 and 1209600 (14 days)."
  }
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic of your paging system) notified when a dead-letter queue is not empty, or (delivery \"queue\" or \"both\") when the queue holds a stale message."
  type        = list(string)
  default     = []
}

variable "ok_actions" {
  description = "ARNs notified when one of those alarms returns to OK."
  type        = list(string)
  default     = []
}

# --- the queue (delivery = "queue" or "both") -------------------------------------------

variable "queue_message_retention_seconds" {
  description = <<-EOT
    How long a notification may wait in the queue for the service (SQS allows 60 s to 14
    days). The service applies a queued notification whatever its age (the queue admits only
    this topic, so an old message is a change still to apply, not a replay), and it receives
    nothing while it is down or not ready: the retention is how long an outage of the
    cluster or the service may last before changes are dropped unseen. Default: the maximum,
    14 days. dlq_message_retention_seconds must be at least this: SQS keeps a message's
    first enqueue time when it moves it to the dead-letter queue.
  EOT
  type        = number
  default     = 1209600

  validation {
    condition     = var.queue_message_retention_seconds >= 60 && var.queue_message_retention_seconds <= 1209600
    error_message = "queue_message_retention_seconds must be between 60 and 1209600 (14 days)."
  }
}

variable "queue_max_receive_count" {
  description = <<-EOT
    maxReceiveCount of the queue's redrive policy: receives of a notification the service
    could not apply before SQS moves it to the queue's dead-letter queue (and its alarm
    fires). The service releases a failed message after 5 s, doubling to at most 5 min, so
    the default 10 is about 25 minutes of retries: enough for an API-server blip or a
    rollout of an admission webhook, short enough that a real failure is seen within the
    half hour. Receives while the service is not ready do not count: it stops receiving.
  EOT
  type        = number
  default     = 10

  validation {
    condition     = var.queue_max_receive_count >= 1 && var.queue_max_receive_count <= 1000
    error_message = "queue_max_receive_count must be between 1 and 1000 (SQS's limit)."
  }
}

variable "queue_oldest_message_alarm_seconds" {
  description = <<-EOT
    Threshold of the alarm <name>-queue-stale on the queue's ApproximateAgeOfOldestMessage.
    A healthy consumer takes a message within seconds, and a failing one moves it to the
    dead-letter queue after queue_max_receive_count receives (about 25 minutes by default),
    so a message older than this means nothing is receiving: the service is down, not ready,
    or denied by IAM. This alarm works when the cluster and its Prometheus do not.
  EOT
  type        = number
  default     = 3600

  validation {
    condition     = var.queue_oldest_message_alarm_seconds >= 60
    error_message = "queue_oldest_message_alarm_seconds must be at least 60."
  }
}

variable "eventbridge_direct_to_queue" {
  description = <<-EOT
    With delivery "queue" or "both": the rules put their events on the queue themselves
    (EventBridge targets) instead of through the topic, and the queue is not subscribed to
    the topic. Such events carry NO signature: the service accepts them only with
    --sqs-accept-eventbridge, and trusts them on the queue policy alone. The queue policy
    then admits only this module's rules, and denies sqs:SendMessage to every other
    principal, administrators included (queue_sender_arns exempts some). Default false: the
    queue receives the topic's signed envelopes, verified like the webhook's.
  EOT
  type        = bool
  default     = false
}

variable "queue_sender_arns" {
  description = <<-EOT
    With eventbridge_direct_to_queue: IAM principal ARNs (wildcards allowed) still allowed to
    send to the queue by their own identity policies, e.g. the operators' role that moves
    messages back from the dead-letter queue (a redrive sends them with the caller's
    sqs:SendMessage). Empty (the default): only the rules.
  EOT
  type        = list(string)
  default     = []
}

# --- IRSA -----------------------------------------------------------------------------

variable "create_irsa_role" {
  description = "Create the IAM role the service account assumes (IRSA). Needs oidc_provider_arn."
  type        = bool
  default     = true
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider, arn:aws:iam::<account>:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id>."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/[^:]+$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must look like arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE."
  }
}

variable "service_account_namespace" {
  description = "Namespace of the service's Kubernetes ServiceAccount (k8s/base: ssm-resync)."
  type        = string
  default     = "ssm-resync"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.service_account_namespace))
    error_message = "service_account_namespace must be a DNS-1123 label."
  }
}

variable "service_account_name" {
  description = "Name of the service's Kubernetes ServiceAccount (k8s/base: ssm-resync)."
  type        = string
  default     = "ssm-resync"

  validation {
    condition     = can(regex("^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$", var.service_account_name))
    error_message = "service_account_name must be a DNS-1123 subdomain."
  }
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary attached to the IRSA role, if your account requires one."
  type        = string
  default     = null
}
