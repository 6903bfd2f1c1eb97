# Events from other regions and accounts. Forwarders (infra/modules/ssm-resync-forwarder) put
# their region's and account's events on this account's default bus, where the rules of
# main.tf match them exactly like local ones: their patterns name neither `account` nor
# `region`, and EventBridge keeps the original event's account and region when it delivers
# an event to another bus, so the service still sees where each change happened.
#
# Other regions of this account need no grant here: a same-account PutEvents is authorised by
# the forwarder role's identity policy alone. Other accounts need this bus policy.

data "aws_cloudwatch_event_bus" "default" {
  name = "default"
}

locals {
  event_bus_arn = data.aws_cloudwatch_event_bus.default.arn
  partition     = element(split(":", local.event_bus_arn), 1)

  accept_other_accounts = var.organization_id != null || length(var.source_account_ids) > 0

  # What other accounts may put: exactly the sources and detail-types the enabled rules match,
  # nothing the rules would drop (and nothing another team's rule on this bus could act on).
  accepted_sources = distinct(concat(
    local.ssm_event_pattern.source,
    var.enable_secrets_manager ? local.secrets_manager_native_pattern.source : [],
    var.enable_secrets_manager ? local.secrets_manager_api_pattern.source : [],
    var.enable_parameter_store_cloudtrail ? local.ssm_api_pattern.source : [],
  ))
  accepted_detail_types = distinct(concat(
    local.ssm_event_pattern["detail-type"],
    var.enable_secrets_manager ? local.secrets_manager_native_pattern["detail-type"] : [],
    var.enable_secrets_manager ? local.secrets_manager_api_pattern["detail-type"] : [],
    var.enable_parameter_store_cloudtrail ? local.ssm_api_pattern["detail-type"] : [],
  ))
}

# ForAllValues: every event of a PutEvents call must have an accepted source and detail-type.
data "aws_iam_policy_document" "event_bus_from_organization" {
  count = var.organization_id == null ? 0 : 1

  statement {
    sid     = "PutEventsFromOrganization"
    effect  = "Allow"
    actions = ["events:PutEvents"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    resources = [local.event_bus_arn]
    condition {
      test     = "StringEquals"
      variable = "aws:PrincipalOrgID"
      values   = [var.organization_id]
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "events:source"
      values   = local.accepted_sources
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "events:detail-type"
      values   = local.accepted_detail_types
    }
  }
}

data "aws_iam_policy_document" "event_bus_from_accounts" {
  count = length(var.source_account_ids) == 0 ? 0 : 1

  statement {
    sid     = "PutEventsFromListedAccounts"
    effect  = "Allow"
    actions = ["events:PutEvents"]
    principals {
      type        = "AWS"
      identifiers = [for id in var.source_account_ids : "arn:${local.partition}:iam::${id}:root"]
    }
    resources = [local.event_bus_arn]
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "events:source"
      values   = local.accepted_sources
    }
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "events:detail-type"
      values   = local.accepted_detail_types
    }
  }
}

data "aws_iam_policy_document" "event_bus" {
  count = local.accept_other_accounts ? 1 : 0

  source_policy_documents = concat(
    data.aws_iam_policy_document.event_bus_from_organization[*].json,
    data.aws_iam_policy_document.event_bus_from_accounts[*].json,
  )
}

resource "aws_cloudwatch_event_bus_policy" "default" {
  count          = local.accept_other_accounts && var.manage_event_bus_policy ? 1 : 0
  event_bus_name = data.aws_cloudwatch_event_bus.default.name
  policy         = data.aws_iam_policy_document.event_bus[0].json
}
