# IRSA: the role the service account assumes. It may confirm the subscription of this topic,
# describe parameters (metadata only) and, with delivery "queue" or "both", consume the queue,
# nothing else: the service never reads a value.

locals {
  # arn:aws:iam::<account>:oidc-provider/<issuer host and path>
  oidc_issuer = var.oidc_provider_arn == null ? "" : element(split(":oidc-provider/", var.oidc_provider_arn), 1)
}

data "aws_iam_policy_document" "assume" {
  count = var.create_irsa_role ? 1 : 0

  statement {
    sid     = "ServiceAccountWebIdentity"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.service_account_namespace}:${var.service_account_name}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  count                = var.create_irsa_role ? 1 : 0
  name                 = "${var.name}-irsa"
  description          = "ssm-resync (${var.service_account_namespace}/${var.service_account_name}): confirm SNS subscriptions of ${var.name}"
  assume_role_policy   = data.aws_iam_policy_document.assume[0].json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags

  lifecycle {
    precondition {
      condition     = var.oidc_provider_arn != null
      error_message = "create_irsa_role needs oidc_provider_arn (the cluster's IAM OIDC provider)."
    }
  }
}

# Exactly the calls the queue consumer makes, on that queue only: ReceiveMessage,
# DeleteMessageBatch (authorised as sqs:DeleteMessage), ChangeMessageVisibilityBatch
# (sqs:ChangeMessageVisibility) and, at start, GetQueueAttributes. The queue's SSE is
# SQS-managed, so no KMS permission is needed (and kms:Decrypt stays denied below).
data "aws_iam_policy_document" "service_queue" {
  count = local.queue_enabled ? 1 : 0

  statement {
    sid    = "ConsumeTheQueue"
    effect = "Allow"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.queue[0].arn]
  }
}

data "aws_iam_policy_document" "service" {
  source_policy_documents = data.aws_iam_policy_document.service_queue[*].json

  statement {
    sid       = "ConfirmSubscriptionOfThisTopic"
    effect    = "Allow"
    actions   = ["sns:ConfirmSubscription"]
    resources = [aws_sns_topic.this.arn]
  }

  statement {
    # DescribeParameters supports no resource-level permissions: "*" is the only form AWS
    # accepts. It returns metadata (names, types, versions), never values.
    sid       = "DescribeParameterMetadata"
    effect    = "Allow"
    actions   = ["ssm:DescribeParameters"]
    resources = ["*"]
  }

  statement {
    # A guardrail against policies attached to this role later: it must never read a value.
    sid    = "NeverReadSecretValues"
    effect = "Deny"
    actions = [
      "ssm:GetParameter",
      "ssm:GetParameters",
      "ssm:GetParametersByPath",
      "ssm:GetParameterHistory",
      "secretsmanager:GetSecretValue",
      "secretsmanager:BatchGetSecretValue",
      "kms:Decrypt",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "service" {
  count  = var.create_irsa_role ? 1 : 0
  name   = "${var.name}-service"
  role   = aws_iam_role.irsa[0].id
  policy = data.aws_iam_policy_document.service.json
}
