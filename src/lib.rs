//! ssm-resync: AWS SSM Parameter Store change events (EventBridge → SNS → HTTPS) force-sync
//! the ExternalSecrets that read the changed parameter.
//!
//! Data path, one direction: `http` receives bytes → `sns` verifies the envelope → `event`
//! decodes the change → `index` finds the resources → `cluster` patches them. `app` wires
//! the program; `main.rs` only dispatches.

pub mod alloc;
pub mod app;
pub mod aws;
pub mod cluster;
pub mod config;
pub mod dedupe;
pub mod event;
pub mod explain;
pub mod health;
pub mod http;
pub mod index;
pub mod log_budget;
pub mod metrics;
pub mod queue;
pub mod resync;
pub mod sample;
pub mod sns;
pub mod sweep;
pub mod text;
