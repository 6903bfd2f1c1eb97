//! What ssm-resync's integration tests and benches share, and the product must not ship: a
//! workspace member that the product (`ssm-resync`) takes only as a dev-dependency, after
//! Linkerd's `policy-test` crate. `cargo build --release --bin ssm-resync` and the container
//! image never compile it.
//!
//! - [`Stack`]: the local stack (real kube-apiserver + etcd, moto, the External Secrets
//!   Operator's controller and webhook; `scripts/stack.sh`), shared by the tests of a binary,
//!   private to one, or the one `make bench` started; its AWS clients (moto); [`Eso`], the
//!   ESO releases a stack can run (one shared stack each under `make test`).
//! - [`Service`]: a real `ssm-resync serve` child process over loopback, as a test or a bench
//!   runs it; [`Replica`]: one on fixed ports that can be killed and started again in place;
//!   [`manifests::Launched`]: one run as a rendered deployment would run it.
//! - [`cluster`]: ESO's resources, namespaces, ExternalSecrets, waiting for the Secret ESO
//!   writes ([`wait_secret`]), and [`Scenario`], how most tests begin.
//! - [`fixtures`]: signed change notifications, unique parameter names.
//! - [`fake_sns`]: a loopback HTTPS "SNS" serving signing certificates to a real `serve`.
//! - [`manifests`]: rendered deployment manifests and their checks (kubectl).
//! - [`bench`]: the benches' result rows, quantiles, /proc readings, dev signing key and
//!   counting allocator.
//! - [`ports`]: free loopback ports below the ephemeral range.
//! - the `loadgen` binary (src/bin/loadgen.rs), `make bench`'s load generator.
//!
//! The service's executable is always the caller's (`bin`): Cargo names it,
//! `env!("CARGO_BIN_EXE_ssm-resync")`, only to the product's own integration tests and
//! benches, so each test or bench binary passes that path in.
//!
//! Never use this crate from the product library's own unit tests: it links the library, and
//! a `#[cfg(test)]` build of the library would be a second copy with types of its own.

pub mod bench;
pub mod cluster;
pub mod fake_sns;
pub mod fixtures;
pub mod manifests;
pub mod ports;
pub mod replica;
pub mod service;
pub mod stack;

pub use cluster::*;
pub use fixtures::{change_notification, explain_change, param, signed_change};
pub use ports::{free_port, free_run};
pub use replica::Replica;
pub use service::{
    Service, counting_listener, no_sweep_unless_asked, post, post_sns, sample, scrape,
};
pub use stack::{Eso, Stack};

/// The repository's root (this crate is its `harness/`): scripts/, k8s/, charts/, tests/data.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
