//! The events AWS services put on EventBridge themselves: Parameter Store Change (the one that
//! arrives at volume, hence its typed fast path), Parameter Store Policy Action and Secrets
//! Manager's Secret Label Updated.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::fields::{
    check_account, check_region, clip, field, optional_account, secret_names, ssm_change, strings,
};
use super::{Change, Decoded, EventError, Operation, Service, Touched};

impl Operation {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "Create" => Some(Self::Create),
            "Update" => Some(Self::Update),
            "Delete" => Some(Self::Delete),
            "LabelParameterVersion" => Some(Self::LabelParameterVersion),
            _ => None,
        }
    }
}

/// The shape of the one event that arrives at volume, read straight into borrowed fields
/// (no `Value` tree). Unknown fields are skipped; a field of another type, a duplicate key or
/// anything else unexpected makes the parse fail, and the message takes the general path.
#[derive(Deserialize)]
struct ChangeEvent<'a> {
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(rename = "detail-type", borrow)]
    detail_type: Cow<'a, str>,
    #[serde(borrow)]
    region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow)]
    detail: Option<ChangeDetail<'a>>,
}

#[derive(Deserialize)]
struct ChangeDetail<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Option<Cow<'a, str>>,
}

/// The fast path for a complete `Parameter Store Change` (name in `detail.name`). `None`
/// means "not that, or not complete": `decode_value` then decides, so both paths give the
/// same answer and the same error for every message (the event tests run through both).
pub(super) fn parameter_store_change_typed(message: &str) -> Option<Result<Decoded, EventError>> {
    let e: ChangeEvent = serde_json::from_str(message).ok()?;
    if e.source != "aws.ssm" || e.detail_type != "Parameter Store Change" {
        return None;
    }
    let detail = e.detail?;
    let (name, operation, region) = (detail.name?, detail.operation?, e.region?);
    let change = Operation::parse(&operation)
        .ok_or_else(|| bad_operation(&operation))
        .and_then(|operation| {
            let account = e.account.as_deref().map(check_account).transpose();
            ssm_change(&region, account, &name, operation)
        });
    Some(change.map(|c| Decoded::Changes(vec![c])))
}

fn bad_operation(operation: &str) -> EventError {
    EventError(format!(
        "detail.operation must be Create, Update, Delete or LabelParameterVersion, got {operation:?}"
    ))
}

pub(super) fn parameter_store_change(event: &Value) -> Result<Change, EventError> {
    let detail = event
        .get("detail")
        .and_then(Value::as_object)
        .ok_or_else(|| EventError("Parameter Store Change without a `detail` object".into()))?;
    let operation = detail
        .get("operation")
        .and_then(Value::as_str)
        .ok_or_else(|| EventError("Parameter Store Change without `detail.operation`".into()))?;
    let operation = Operation::parse(operation).ok_or_else(|| bad_operation(operation))?;
    let region = field(event, "region")?;
    let name = match detail.get("name").and_then(Value::as_str) {
        Some(n) => n.to_owned(),
        None => name_from_arn(event)?,
    };
    ssm_change(
        region,
        optional_account(event.get("account")),
        &name,
        operation,
    )
}

/// `Parameter Store Policy Action`: `Expiration` means SSM deleted the parameter (a change,
/// like Delete); `ExpirationNotification` and `NoChangeNotification` are reminders, counted
/// and not acted on. The name is in `detail.name` or `detail.parameter-name` depending on the
/// source, else in `resources[0]`.
pub(super) fn parameter_policy_action(event: &Value) -> Result<Decoded, EventError> {
    let policy = event
        .pointer("/detail/policy-type")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            EventError("Parameter Store Policy Action without `detail.policy-type`".into())
        })?;
    match policy {
        "Expiration" => {}
        "ExpirationNotification" | "NoChangeNotification" => {
            return Ok(Decoded::Ignored {
                kind: "policy_notification",
                detail: format!("policy-type={policy}"),
            });
        }
        other => {
            return Err(EventError(format!(
                "unknown detail.policy-type {:?}",
                clip(other)
            )));
        }
    }
    let name = match ["/detail/name", "/detail/parameter-name"]
        .iter()
        .find_map(|p| event.pointer(p).and_then(Value::as_str))
    {
        Some(n) => n.to_owned(),
        None => name_from_arn(event)?,
    };
    let region = field(event, "region")?;
    let account = optional_account(event.get("account"));
    ssm_change(region, account, &name, Operation::Expiration).map(|c| Decoded::Changes(vec![c]))
}

/// Secrets Manager's own event when a staging label moves (rotation, UpdateSecretVersionStage,
/// a new value): `detail.name` is the name (an ARN there is read as a caller's would be), and
/// `detail.labelUpdated` the stage that moved (`detail.versionId` is where it moved to, a
/// version that already existed: its readers by id get nothing new).
pub(super) fn secret_label_updated(event: &Value) -> Result<Vec<Change>, EventError> {
    let name = event
        .pointer("/detail/name")
        .or_else(|| event.pointer("/detail/secretId"))
        .and_then(Value::as_str)
        .ok_or_else(|| EventError("Secret Label Updated without `detail.name`".into()))?;
    let region = check_region(field(event, "region")?)?;
    let account = optional_account(event.get("account"))?;
    let touched = Touched {
        labels: strings(event.pointer("/detail/labelUpdated")),
        ..Touched::default()
    };
    Ok(secret_names(name, false)?
        .into_iter()
        .map(|name| Change {
            service: Service::SecretsManager,
            region: region.clone(),
            account: account.clone(),
            name,
            operation: Operation::LabelUpdated,
            touched: touched.clone(),
        })
        .collect())
}

/// `arn:aws:ssm:<region>:<account>:parameter/<name>`: the ARN inserts a `/` only when the
/// name lacks one, so `parameter/a/b` may be `/a/b` or `a/b`; the index compares both ways.
fn name_from_arn(event: &Value) -> Result<String, EventError> {
    let arn = event
        .get("resources")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_str)
        .ok_or_else(|| EventError("no `detail.name` and no `resources[0]` ARN".into()))?;
    arn.split_once(":parameter/")
        .map(|(_, n)| format!("/{n}"))
        .ok_or_else(|| {
            EventError(format!(
                "resources[0] is not a parameter ARN: {:?}",
                clip(arn)
            ))
        })
}
