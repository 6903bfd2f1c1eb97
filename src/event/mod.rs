//! Decoding the SNS `Message` into the changes it reports. Pure: serde only.
//!
//! EventBridge delivers its event to SNS as compact JSON, so the SNS `Message` is itself JSON
//! (parsed a second time here). Besides AWS's events, a plain hand-written format is accepted
//! for curl tests: `{"parameters": ["/app/db/password"], "region": "us-east-1", "account": "…"}`.

pub mod arn;
mod cloudtrail;
mod fields;
mod native;
mod plain;

use serde_json::Value;

/// Which AWS service the changed item lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    ParameterStore,
    SecretsManager,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParameterStore => "ParameterStore",
            Self::SecretsManager => "SecretsManager",
        }
    }
}

/// What happened to the item. Each changes what some readers get: a Delete makes ESO report
/// the failure now rather than at its next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Update,
    Delete,
    LabelParameterVersion,
    /// Parameter Store: UnlabelParameterVersion (CloudTrail only).
    UnlabelParameterVersion,
    /// Parameter Store Policy Action `Expiration`: SSM deleted the parameter.
    Expiration,
    /// Tags added or removed (AddTagsToResource, RemoveTagsFromResource, TagResource,
    /// UntagResource): what `find.tags` and `metadataPolicy: Fetch` read.
    TagsChanged,
    /// Secrets Manager: a staging label (AWSCURRENT, AWSPREVIOUS, ...) moved.
    LabelUpdated,
    /// Secrets Manager API calls (CloudTrail), by name.
    CreateSecret,
    PutSecretValue,
    UpdateSecret,
    RotateSecret,
    DeleteSecret,
    RestoreSecret,
    UpdateSecretVersionStage,
    /// Secrets Manager: RotationSucceeded (an `AWS Service Event via CloudTrail`).
    RotationSucceeded,
    /// Secrets Manager: a replica created in this region (ReplicateSecretToRegions).
    ReplicaCreated,
    /// Secrets Manager: a replica removed from this region (RemoveRegionsFromReplication).
    ReplicaRemoved,
}

/// What an operation can change of an item: decides which readers it reaches (the index
/// knows what each reference reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// The item appeared or went away: every reader, and every `find` that lists it.
    Existence,
    /// A new newest value (Secrets Manager: AWSCURRENT, and AWSPREVIOUS with it, moved).
    Value,
    /// A Parameter Store label moved or went away.
    Label,
    /// Its tags.
    Tags,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "Create",
            Self::Update => "Update",
            Self::Delete => "Delete",
            Self::LabelParameterVersion => "LabelParameterVersion",
            Self::UnlabelParameterVersion => "UnlabelParameterVersion",
            Self::Expiration => "Expiration",
            Self::TagsChanged => "TagsChanged",
            Self::LabelUpdated => "LabelUpdated",
            Self::CreateSecret => "CreateSecret",
            Self::PutSecretValue => "PutSecretValue",
            Self::UpdateSecret => "UpdateSecret",
            Self::RotateSecret => "RotateSecret",
            Self::DeleteSecret => "DeleteSecret",
            Self::RestoreSecret => "RestoreSecret",
            Self::UpdateSecretVersionStage => "UpdateSecretVersionStage",
            Self::RotationSucceeded => "RotationSucceeded",
            Self::ReplicaCreated => "ReplicaCreated",
            Self::ReplicaRemoved => "ReplicaRemoved",
        }
    }

    pub fn effect(self) -> Effect {
        match self {
            Self::Create
            | Self::Delete
            | Self::Expiration
            | Self::CreateSecret
            | Self::DeleteSecret
            | Self::RestoreSecret
            | Self::ReplicaCreated
            | Self::ReplicaRemoved => Effect::Existence,
            Self::Update
            | Self::LabelUpdated
            | Self::PutSecretValue
            | Self::UpdateSecret
            | Self::RotateSecret
            | Self::UpdateSecretVersionStage
            | Self::RotationSucceeded => Effect::Value,
            Self::LabelParameterVersion | Self::UnlabelParameterVersion => Effect::Label,
            Self::TagsChanged => Effect::Tags,
        }
    }
}

/// One changed item, as the index understands it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    pub service: Service,
    pub region: String,
    /// The AWS account the event came from, when it says.
    pub account: Option<String>,
    /// The name exactly as the event gave it (hierarchical names start with `/`).
    pub name: String,
    pub operation: Operation,
    /// Which versions, labels or stages the operation touched, as far as the event says.
    pub touched: Touched,
}

/// What an event says about what its operation touched of the item. Each field is `None`
/// when the event does not say; then every reader that the operation's [`Effect`] reaches is
/// reached. When it does say, a reader of a version, label, stage or metadata the operation
/// left alone is not patched (it would re-sync to the same value: an ESO sync and AWS calls
/// for nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Touched {
    /// Parameter Store: the version number written (a Create writes version 1; CloudTrail's
    /// PutParameter says it in `responseElements.version`).
    pub number: Option<u64>,
    /// Secrets Manager: the version id written (`responseElements.versionId`, else the
    /// request's `clientRequestToken`, which becomes the id).
    pub id: Option<String>,
    /// The Parameter Store labels that moved or went away, or the Secrets Manager staging
    /// labels that moved (AWSCURRENT moving takes AWSPREVIOUS with it).
    pub labels: Option<Vec<String>>,
    /// Secrets Manager DeleteSecret: `true` when it only scheduled the deletion (a recovery
    /// window): the secret's tags stay readable (DescribeSecret) until then.
    pub scheduled: Option<bool>,
}

impl Touched {
    /// Whether a Secrets Manager stage moved, when the event says which did.
    pub fn stage_moved(&self, stage: &str) -> Option<bool> {
        self.labels.as_ref().map(|moved| {
            moved.iter().any(|s| s == stage)
                || (stage == "AWSPREVIOUS" && moved.iter().any(|s| s == "AWSCURRENT"))
        })
    }
}

/// What a message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Changes(Vec<Change>),
    /// A well-formed message this service does not act on. `kind` is a bounded label value;
    /// `detail` names the type for the (once-per-type) log line.
    Ignored {
        kind: &'static str,
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventError(pub String);

/// Most a plain test payload may name at once.
pub const MAX_PLAIN_PARAMETERS: usize = 100;

/// Decodes an SNS `Message` as `serve` does: the plain test format only when allowed
/// (`--accept-plain-format`: anyone who may publish to the topic could name any 100
/// parameters with it, so it is off in production and on in the local stack).
pub fn decode_delivered(message: &str, accept_plain: bool) -> Result<Decoded, EventError> {
    // The event that arrives at volume has a `source`, so it is never the plain format: no
    // second parse to find out (it was a whole `Value` tree per notification).
    if let Some(decoded) = native::parameter_store_change_typed(message) {
        return decoded;
    }
    let decoded = decode_value(message);
    // Checked for a malformed plain message too: with the format off, its fields are not
    // worth a 400 (SNS would count a failed delivery for a message nobody can act on).
    if !accept_plain && !matches!(decoded, Ok(Decoded::Ignored { .. })) && is_plain(message) {
        return Ok(Decoded::Ignored {
            kind: "plain_format_disabled",
            detail: "the plain test format is off (--accept-plain-format)".into(),
        });
    }
    decoded
}

/// The plain format is the one JSON object without `source` and with `parameters`.
fn is_plain(message: &str) -> bool {
    serde_json::from_str::<Value>(message)
        .is_ok_and(|v| v.get("source").is_none() && v.get("parameters").is_some())
}

/// Decodes an SNS `Message` (every format; `explain` and tests).
pub fn decode(message: &str) -> Result<Decoded, EventError> {
    if let Some(decoded) = native::parameter_store_change_typed(message) {
        return decoded;
    }
    decode_value(message)
}

/// Decodes any message through a `serde_json::Value` tree.
fn decode_value(message: &str) -> Result<Decoded, EventError> {
    let Ok(value) = serde_json::from_str::<Value>(message) else {
        return Ok(Decoded::Ignored {
            kind: "not_json",
            detail: "message is not JSON".into(),
        });
    };
    let Some(obj) = value.as_object() else {
        return Ok(Decoded::Ignored {
            kind: "not_json",
            detail: "message is not a JSON object".into(),
        });
    };
    if let Some(source) = obj.get("source") {
        let source = source.as_str().unwrap_or_default();
        let detail_type = obj
            .get("detail-type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return match (source, detail_type) {
            ("aws.ssm", "Parameter Store Change") => {
                native::parameter_store_change(&value).map(|c| Decoded::Changes(vec![c]))
            }
            ("aws.ssm", "Parameter Store Policy Action") => native::parameter_policy_action(&value),
            ("aws.secretsmanager", "Secret Label Updated") => {
                native::secret_label_updated(&value).map(Decoded::Changes)
            }
            ("aws.secretsmanager", "AWS API Call via CloudTrail") => {
                cloudtrail::secrets_manager_api_call(&value)
            }
            ("aws.secretsmanager", "AWS Service Event via CloudTrail") => {
                cloudtrail::secrets_manager_service_event(&value)
            }
            ("aws.ssm", "AWS API Call via CloudTrail") => {
                cloudtrail::parameter_store_api_call(&value)
            }
            _ => Ok(Decoded::Ignored {
                kind: "unhandled_event",
                detail: format!("source={source:?} detail-type={detail_type:?}"),
            }),
        };
    }
    if obj.contains_key("parameters") {
        return plain::changes(&value).map(Decoded::Changes);
    }
    Ok(Decoded::Ignored {
        kind: "unrecognized",
        detail: "JSON without `source` (EventBridge) or `parameters` (plain format)".into(),
    })
}

#[cfg(test)]
mod tests;
