# The role EventBridge assumes to put this module's events on the central bus: only this
# account's rules of this module may assume it, and it may only events:PutEvents on that one
# bus. IAM is global: the name carries the region, so one account can forward from several.

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "EventBridgeRulesOfThisModule"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    # Confused-deputy guard: for event bus rule targets aws:SourceArn is the rule's ARN.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = local.rule_arns
    }
  }
}

resource "aws_iam_role" "forward" {
  name                 = "${var.name}-forward-${local.region}"
  description          = "EventBridge: forward ssm-resync change events from ${local.region} to ${var.central_event_bus_arn}"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags

  lifecycle {
    precondition {
      # A rule whose target is its own bus would loop every matching event.
      condition     = var.central_event_bus_arn != data.aws_cloudwatch_event_bus.local.arn
      error_message = "central_event_bus_arn is the default bus of this account and region: the forwarder belongs in other regions and accounts (infra/modules/ssm-resync already covers its own)."
    }
  }
}

data "aws_iam_policy_document" "forward" {
  statement {
    sid       = "PutEventsOnTheCentralBus"
    effect    = "Allow"
    actions   = ["events:PutEvents"]
    resources = [var.central_event_bus_arn]
  }
}

resource "aws_iam_role_policy" "forward" {
  name   = "${var.name}-put-events"
  role   = aws_iam_role.forward.id
  policy = data.aws_iam_policy_document.forward.json
}
