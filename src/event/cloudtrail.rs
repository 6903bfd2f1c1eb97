//! What EventBridge forwards from CloudTrail: `AWS API Call via CloudTrail` for Secrets Manager
//! and Parameter Store, and Secrets Manager's `AWS Service Event via CloudTrail`. These report
//! the calls the native events do not, and every call for set-ups that forward only CloudTrail.

use serde_json::Value;

use super::fields::{check_region, clip, optional_account, secret_names, ssm_change, strings};
use super::{Change, Decoded, EventError, MAX_PLAIN_PARAMETERS, Operation, Service, Touched};

impl Operation {
    /// The Secrets Manager API calls that change what a reader would get, one secret each.
    fn secrets_manager_call(s: &str) -> Option<Self> {
        match s {
            "CreateSecret" => Some(Self::CreateSecret),
            "PutSecretValue" => Some(Self::PutSecretValue),
            "UpdateSecret" => Some(Self::UpdateSecret),
            "RotateSecret" => Some(Self::RotateSecret),
            "DeleteSecret" => Some(Self::DeleteSecret),
            "RestoreSecret" => Some(Self::RestoreSecret),
            "UpdateSecretVersionStage" => Some(Self::UpdateSecretVersionStage),
            "TagResource" | "UntagResource" => Some(Self::TagsChanged),
            _ => None,
        }
    }
}

/// A CloudTrail record's `detail` and its call's name.
type Call<'a> = (&'a serde_json::Map<String, Value>, &'a str);

/// The CloudTrail record's `detail`, if it is a successful call of `service`; otherwise why it
/// is ignored.
fn cloudtrail_detail<'a>(
    event: &'a Value,
    service: &str,
) -> Result<Result<Call<'a>, Decoded>, EventError> {
    let detail = event
        .get("detail")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            EventError("AWS API Call via CloudTrail without a `detail` object".into())
        })?;
    let call = detail
        .get("eventName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if detail.get("eventSource").and_then(Value::as_str) != Some(service) {
        return Ok(Err(Decoded::Ignored {
            kind: "unhandled_event",
            detail: format!("CloudTrail call outside {service}"),
        }));
    }
    if detail.get("errorCode").is_some_and(|e| !e.is_null()) {
        return Ok(Err(Decoded::Ignored {
            kind: "failed_api_call",
            detail: format!("{service} {} failed", clip(call)),
        }));
    }
    Ok(Ok((detail, call)))
}

/// The event's region: `region`, else CloudTrail's `detail.awsRegion`.
fn event_region(event: &Value) -> Result<String, EventError> {
    check_region(
        event
            .get("region")
            .or_else(|| event.pointer("/detail/awsRegion"))
            .and_then(Value::as_str)
            .unwrap_or_default(),
    )
}

/// CloudTrail's record of a Secrets Manager API call. Only successful calls that change what
/// readers get are changes; everything else (GetSecretValue, failed calls) is ignored.
pub(super) fn secrets_manager_api_call(event: &Value) -> Result<Decoded, EventError> {
    let (detail, call) = match cloudtrail_detail(event, "secretsmanager.amazonaws.com")? {
        Ok(d) => d,
        Err(ignored) => return Ok(ignored),
    };
    let region = event_region(event)?;
    let account = optional_account(event.get("account"))?;
    let touched = secrets_manager_touched(detail, call);
    let change = |region: &str, name: String, operation| Change {
        service: Service::SecretsManager,
        region: region.to_owned(),
        account: account.clone(),
        name,
        operation,
        touched: touched.clone(),
    };
    let regions_in = |list: &str| -> Vec<String> {
        detail
            .get("requestParameters")
            .and_then(|r| r.get(list))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("region").or(Some(r)).and_then(Value::as_str))
                    .filter_map(|r| check_region(r).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // A replica appears or goes away in other regions: the same name there.
    let replica = match call {
        "ReplicateSecretToRegions" => {
            Some((regions_in("addReplicaRegions"), Operation::ReplicaCreated))
        }
        "RemoveRegionsFromReplication" => Some((
            regions_in("removeReplicaRegions"),
            Operation::ReplicaRemoved,
        )),
        _ => None,
    };
    let operation = match (&replica, Operation::secrets_manager_call(call)) {
        (Some(_), _) => None,
        (None, Some(op)) => Some(op),
        (None, None) => {
            return Ok(Decoded::Ignored {
                kind: "unhandled_api_call",
                detail: format!("secretsmanager {}", clip(call)),
            });
        }
    };
    let names = secret_names_of(detail, call)?;
    let mut changes = Vec::new();
    for name in names {
        match (&replica, operation) {
            (Some((regions, op)), _) => {
                changes.extend(regions.iter().map(|r| change(r, name.clone(), *op)))
            }
            (None, Some(op)) => changes.push(change(&region, name, op)),
            (None, None) => {}
        }
    }
    Ok(Decoded::Changes(changes))
}

/// What a Secrets Manager call says about the version it wrote and the stages it moved:
/// CreateSecret writes one version (AWSCURRENT, nothing else); PutSecretValue attaches the
/// stages it names (AWSCURRENT when it names none); UpdateSecret with a new value moves
/// AWSCURRENT; UpdateSecretVersionStage moves the one stage it names; DeleteSecret deletes
/// at once only with `forceDeleteWithoutRecovery`. The rest say nothing.
fn secrets_manager_touched(detail: &serde_json::Map<String, Value>, call: &str) -> Touched {
    let request = detail.get("requestParameters");
    let response = detail.get("responseElements");
    // A version id is a 32-64 character token (the SDKs send a UUID).
    let token = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .filter(|s| (1..=64).contains(&s.len()))
            .map(str::to_owned)
    };
    let written = token(response, "versionId").or_else(|| token(request, "clientRequestToken"));
    fn field<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a Value> {
        v.and_then(|v| v.get(key))
    }
    match call {
        "CreateSecret" => Touched {
            id: written,
            ..Touched::default()
        },
        "PutSecretValue" => Touched {
            id: written,
            labels: strings(field(response, "versionStages"))
                .or_else(|| strings(field(request, "versionStages")))
                .or_else(|| Some(vec!["AWSCURRENT".to_owned()])),
            ..Touched::default()
        },
        // Without a new value (description, KMS key) the response has no version id: what it
        // changed for readers is not said, so every reader stays reached.
        "UpdateSecret" if token(response, "versionId").is_some() => Touched {
            id: written,
            labels: Some(vec!["AWSCURRENT".to_owned()]),
            ..Touched::default()
        },
        "UpdateSecretVersionStage" => Touched {
            labels: strings(field(request, "versionStage")),
            ..Touched::default()
        },
        "DeleteSecret" if request.is_some_and(Value::is_object) => Touched {
            scheduled: Some(
                field(request, "forceDeleteWithoutRecovery").and_then(Value::as_bool) != Some(true),
            ),
            ..Touched::default()
        },
        _ => Touched::default(),
    }
}

/// The secret a CloudTrail record is about. The full ARN AWS put in `responseElements.arn`
/// (`aRN` in records before February 2024) names it unambiguously; else the request's
/// `secretId` (CreateSecret: `name`) as the caller gave it, a name or an ARN that may lack the
/// random suffix (both readings are kept then).
fn secret_names_of(
    detail: &serde_json::Map<String, Value>,
    call: &str,
) -> Result<Vec<String>, EventError> {
    let response_arn = detail
        .get("responseElements")
        .and_then(|r| r.get("arn").or_else(|| r.get("aRN")))
        .and_then(Value::as_str)
        .filter(|a| a.starts_with("arn:"));
    if let Some(arn) = response_arn {
        return secret_names(arn, true);
    }
    let field = if call == "CreateSecret" {
        "name"
    } else {
        "secretId"
    };
    let id = detail
        .get("requestParameters")
        .and_then(|r| r.get(field))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            EventError(format!(
                "{} without `detail.requestParameters.{field}`",
                clip(call)
            ))
        })?;
    secret_names(id, false)
}

/// `AWS Service Event via CloudTrail` from Secrets Manager: `RotationSucceeded` means a new
/// AWSCURRENT; the others (rotation started or failed, version deleted) change no value a
/// reader gets.
pub(super) fn secrets_manager_service_event(event: &Value) -> Result<Decoded, EventError> {
    let call = event
        .pointer("/detail/eventName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if call != "RotationSucceeded" {
        return Ok(Decoded::Ignored {
            kind: "unhandled_api_call",
            detail: format!("secretsmanager service event {}", clip(call)),
        });
    }
    let id = event
        .pointer("/detail/additionalEventData/SecretId")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            EventError("RotationSucceeded without `detail.additionalEventData.SecretId`".into())
        })?;
    let region = event_region(event)?;
    let account = optional_account(event.get("account"))?;
    // The rotation service names the secret by its full ARN.
    Ok(Decoded::Changes(
        secret_names(id, id.starts_with("arn:"))?
            .into_iter()
            .map(|name| Change {
                service: Service::SecretsManager,
                region: region.clone(),
                account: account.clone(),
                name,
                operation: Operation::RotationSucceeded,
                touched: Touched::default(),
            })
            .collect(),
    ))
}

/// CloudTrail's record of a Parameter Store API call: what the native `Parameter Store
/// Change` event does not report (UnlabelParameterVersion, DeleteParameters, tag changes),
/// and the rest for set-ups that forward only CloudTrail.
pub(super) fn parameter_store_api_call(event: &Value) -> Result<Decoded, EventError> {
    let (detail, call) = match cloudtrail_detail(event, "ssm.amazonaws.com")? {
        Ok(d) => d,
        Err(ignored) => return Ok(ignored),
    };
    let request = detail.get("requestParameters").unwrap_or(&Value::Null);
    let response = detail.get("responseElements").unwrap_or(&Value::Null);
    let text = |key: &str| request.get(key).and_then(Value::as_str);
    fn names_in(v: &Value) -> Option<Vec<&str>> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
    }
    let mut touched = Touched::default();
    let (names, operation): (Vec<&str>, Operation) = match call {
        // The response's version tells a new parameter from a new version of one.
        "PutParameter" => {
            touched.number = response.get("version").and_then(Value::as_u64);
            (
                text("name").into_iter().collect(),
                if touched.number == Some(1) {
                    Operation::Create
                } else {
                    Operation::Update
                },
            )
        }
        "DeleteParameter" => (text("name").into_iter().collect(), Operation::Delete),
        // The response says which names were deleted; the others (`invalidParameters`) did
        // not exist, and nobody's value changed.
        "DeleteParameters" => match response.get("deletedParameters").and_then(names_in) {
            Some(deleted) if deleted.is_empty() => {
                return Ok(Decoded::Ignored {
                    kind: "nothing_deleted",
                    detail: "ssm DeleteParameters deleted no parameter (all invalid)".into(),
                });
            }
            Some(deleted) => (deleted, Operation::Delete),
            None => (
                request.get("names").and_then(names_in).unwrap_or_default(),
                Operation::Delete,
            ),
        },
        // The labels that moved: those asked for, less the ones AWS refused.
        "LabelParameterVersion" => {
            let invalid = strings(response.get("invalidLabels")).unwrap_or_default();
            touched.labels = strings(request.get("labels"))
                .map(|l| l.into_iter().filter(|l| !invalid.contains(l)).collect());
            (
                text("name").into_iter().collect(),
                Operation::LabelParameterVersion,
            )
        }
        // The labels removed: the response's `removedLabels`, else those asked for.
        "UnlabelParameterVersion" => {
            touched.labels =
                strings(response.get("removedLabels")).or_else(|| strings(request.get("labels")));
            (
                text("name").into_iter().collect(),
                Operation::UnlabelParameterVersion,
            )
        }
        "AddTagsToResource" | "RemoveTagsFromResource" => {
            if text("resourceType") != Some("Parameter") {
                return Ok(Decoded::Ignored {
                    kind: "unhandled_api_call",
                    detail: format!(
                        "ssm {call} of a {:?}",
                        clip(text("resourceType").unwrap_or_default())
                    ),
                });
            }
            (
                text("resourceId").into_iter().collect(),
                Operation::TagsChanged,
            )
        }
        other => {
            return Ok(Decoded::Ignored {
                kind: "unhandled_api_call",
                detail: format!("ssm {}", clip(other)),
            });
        }
    };
    if names.is_empty() {
        return Err(EventError(format!(
            "ssm {call} without the parameter's name in `detail.requestParameters`"
        )));
    }
    if names.len() > MAX_PLAIN_PARAMETERS {
        return Err(EventError(format!(
            "ssm {call} names {} parameters; at most {MAX_PLAIN_PARAMETERS} are read",
            names.len()
        )));
    }
    let region = event_region(event)?;
    let account = optional_account(event.get("account"));
    names
        .into_iter()
        .map(|n| {
            // A name or an ARN (tag calls accept both).
            let name = match n.split_once(":parameter") {
                Some((arn, rest)) if arn.starts_with("arn:") => {
                    if rest.starts_with('/') {
                        rest.to_owned()
                    } else {
                        format!("/{rest}")
                    }
                }
                _ => n.to_owned(),
            };
            ssm_change(&region, account.clone(), &name, operation).map(|c| Change {
                touched: touched.clone(),
                ..c
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Decoded::Changes)
}
