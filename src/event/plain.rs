//! The plain format hand-written for curl tests (shown in the `event` module's doc). Whether it
//! is accepted at all is `decode_delivered`'s call; here each name is read as an Update of a
//! Parameter Store parameter.

use serde_json::Value;

use super::fields::{check_name, check_region, field, optional_account};
use super::{Change, EventError, MAX_PLAIN_PARAMETERS, Operation, Service, Touched};

pub(super) fn changes(value: &Value) -> Result<Vec<Change>, EventError> {
    let params = value
        .get("parameters")
        .and_then(Value::as_array)
        .ok_or_else(|| EventError("`parameters` must be an array of names".into()))?;
    if params.is_empty() || params.len() > MAX_PLAIN_PARAMETERS {
        return Err(EventError(format!(
            "`parameters` must name 1 to {MAX_PLAIN_PARAMETERS} parameters, got {}",
            params.len()
        )));
    }
    let region = check_region(field(value, "region")?)?;
    let account = optional_account(value.get("account"))?;
    params
        .iter()
        .map(|p| {
            let name = p
                .as_str()
                .ok_or_else(|| EventError("`parameters` entries must be strings".into()))?;
            Ok(Change {
                service: Service::ParameterStore,
                region: region.clone(),
                account: account.clone(),
                name: check_name(name)?,
                operation: Operation::Update,
                touched: Touched::default(),
            })
        })
        .collect()
}
