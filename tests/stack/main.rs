//! The integration tests on the local stack (real kube-apiserver + etcd, moto, the External
//! Secrets Operator), in one test binary: every test binary links the whole crate, and one
//! per file once ran CI out of disk. `make test` starts one shared stack for them; tests
//! that stop the API server or ESO, or run a sweep, start a private one.
//!
//! The tests run concurrently (libtest's threads, one per core) and share the stack. Each
//! service a test starts watches the whole cluster, so tests never share a parameter name
//! (`param`), a namespace (`namespace`) or a topic, and services run without the catch-up
//! sweep (`no_sweep_unless_asked`). A test whose service runs as deployed, sweep included,
//! has the shared stack to itself (`Stack::shared_alone`). The tests that judge latency or
//! the service's use of the machine run alone in tests/serial.

mod adversarial;
mod deploy;
mod e2e;
mod eso_ces;
mod helm;
mod image;
mod kes;
mod oracle;
mod outcomes;
mod queue;
mod references;
mod reliability;
mod tenants;

/// What the tests share: the harness (harness/, `ssm-resync-harness`) and the service's
/// executable, which Cargo names only to this package's own tests.
mod common {
    pub use ssm_resync_harness::*;

    /// The service under test.
    pub const BIN: &str = env!("CARGO_BIN_EXE_ssm-resync");
    /// The repository's root (this package's directory).
    pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
}
