//! Checks on the fields every event format carries (region, account, names), in one place so
//! that the same bad value gets the same error whichever format or path brought it.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::{Change, EventError, Operation, Service, Touched, arn};

static REGION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}$").expect("static regex"));

pub(super) fn field<'a>(v: &'a Value, key: &str) -> Result<&'a str, EventError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| EventError(format!("missing string field `{key}`")))
}

pub(super) fn check_region(region: &str) -> Result<String, EventError> {
    if REGION.is_match(region) {
        Ok(region.to_owned())
    } else {
        Err(EventError(format!(
            "region must look like us-east-1, got {:?}",
            clip(region)
        )))
    }
}

pub(super) fn optional_account(v: Option<&Value>) -> Result<Option<String>, EventError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(a)) => check_account(a).map(Some),
        Some(other) => Err(EventError(format!(
            "account must be 12 digits, got {}",
            clip(&other.to_string())
        ))),
    }
}

pub(super) fn check_account(account: &str) -> Result<String, EventError> {
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(account.to_owned())
    } else {
        Err(EventError(format!(
            "account must be 12 digits, got {}",
            clip(&Value::from(account).to_string())
        )))
    }
}

/// SSM's rule for parameter names: 1 to 2048 of `[A-Za-z0-9_.-/]`.
pub(super) fn check_name(name: &str) -> Result<String, EventError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/');
    if (1..=2048).contains(&name.len()) && name.bytes().all(allowed) {
        Ok(name.to_owned())
    } else {
        Err(EventError(format!(
            "parameter name must be 1-2048 of [A-Za-z0-9_.-/], got {:?}",
            clip(name)
        )))
    }
}

/// A Parameter Store change from its parts. The checks run in one order (region, account,
/// name), so every path that builds one reports the same first error. A Create writes
/// version 1 (a parameter deleted and created again starts over at 1).
pub(super) fn ssm_change(
    region: &str,
    account: Result<Option<String>, EventError>,
    name: &str,
    operation: Operation,
) -> Result<Change, EventError> {
    Ok(Change {
        service: Service::ParameterStore,
        region: check_region(region)?,
        account: account?,
        name: check_name(name)?,
        operation,
        touched: Touched {
            number: (operation == Operation::Create).then_some(1),
            ..Touched::default()
        },
    })
}

/// A list of labels or stages the event carries, or a single one; `None` when the field is
/// absent, not strings only, or larger than AWS allows (the event then says nothing about it,
/// and every reader the operation's effect reaches is reached).
pub(super) fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    // AWS: at most 10 labels per call and 20 stages per version, each at most 256 characters.
    const MOST: usize = 20;
    const LONGEST: usize = 256;
    let one = |s: &Value| s.as_str().filter(|s| s.len() <= LONGEST).map(str::to_owned);
    match v? {
        s @ Value::String(_) => one(s).map(|s| vec![s]),
        Value::Array(a) if a.len() <= MOST => a.iter().map(one).collect(),
        _ => None,
    }
}

static SECRET_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9/_+=.@\-]{1,512}$").expect("static regex"));

/// A secret's name from a name or an ARN (`arn:aws:secretsmanager:<region>:<account>:secret:<name>-XXXXXX`).
/// An ARN from AWS itself (`full`) always ends in the random suffix, which is dropped; one a
/// caller wrote may be partial, so a name ending in `-` and six characters is kept both ways.
pub(super) fn secret_names(id: &str, full: bool) -> Result<Vec<String>, EventError> {
    let names: Vec<&str> = match id.strip_prefix("arn:") {
        Some(rest) => {
            let resource = rest.splitn(5, ':').nth(4).unwrap_or_default();
            let name = resource
                .strip_prefix("secret:")
                .ok_or_else(|| EventError(format!("not a secret ARN: {:?}", clip(id))))?;
            match (arn::secret_arn_names(name), full) {
                ((_, Some(base)), true) => vec![base],
                ((whole, Some(base)), false) => vec![whole, base],
                ((whole, None), _) => vec![whole],
            }
        }
        None => vec![id],
    };
    names
        .into_iter()
        .map(|name| {
            if SECRET_NAME.is_match(name) {
                Ok(name.to_owned())
            } else {
                Err(EventError(format!(
                    "secret name must be 1-512 of [A-Za-z0-9/_+=.@-], got {:?}",
                    clip(name)
                )))
            }
        })
        .collect()
}

pub(super) fn clip(s: &str) -> &str {
    crate::text::truncate(s, 80)
}
