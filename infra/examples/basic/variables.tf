variable "region" {
  description = "Region of the parameters, the topic and the cluster."
  type        = string
}

variable "cluster_name" {
  description = "EKS cluster the service runs in (its IAM OIDC provider is looked up)."
  type        = string
}

variable "parameter_name_prefixes" {
  description = "Forward only these parameter name prefixes; empty for all."
  type        = list(string)
  default     = []
}

variable "delivery" {
  description = "\"webhook\" (SNS -> HTTPS -> the public ALB of k8s/overlays/eks), \"queue\" (SNS -> SQS, pulled by k8s/overlays/eks-private: no public endpoint) or \"both\"."
  type        = string
  default     = "webhook"
}

variable "subscription_endpoint" {
  description = "https://<ALB host>/sns once the service is deployed; null on the first apply, and always with delivery = \"queue\"."
  type        = string
  default     = null
}

variable "alarm_actions" {
  description = "Where the dead-letter queue alarm goes (e.g. an SNS topic of your pager)."
  type        = list(string)
  default     = []
}
