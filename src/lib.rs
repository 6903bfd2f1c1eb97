//! ssm-resync: AWS SSM Parameter Store change events (EventBridge → SNS → HTTPS) force-sync
//! the ExternalSecrets that read the changed parameter.
//!
//! Data path, one direction: `http` receives bytes → `sns` verifies the envelope → `event`
//! decodes the change → `index` finds the resources → `cluster` patches them.

pub mod event;
pub mod index;
pub mod sns;
