//! The integration tests on the local stack (real kube-apiserver + etcd, moto, the External
//! Secrets Operator), in one test binary: every test binary links the whole crate, and one
//! per file once ran CI out of disk. `make test` starts one shared stack for them per ESO
//! release (below); tests that stop the API server or ESO start a private one.
//!
//! The tests run concurrently (libtest's threads, one per core) and share the stack. Each
//! service a test starts watches the whole cluster, so tests never share a parameter name
//! (`param`), a namespace (`namespace`) or a topic, and services run without the catch-up
//! sweep (`no_sweep_unless_asked`). A test whose service runs as deployed, sweep included,
//! has the shared stack to itself (`Stack::shared_alone`). The tests that judge latency or
//! the service's use of the machine run alone in tests/serial.
//!
//! Every test that ends at the Secret runs on ESO's default release (`Stack::shared()`). The
//! ones whose outcome can depend on the release (the ClusterExternalSecret triggers, every
//! way a resource references AWS, the refresh outcomes, the oracle) run on each release the
//! stack can run as well: `on_each_eso!` makes one test per release, named after it, of a
//! function that takes the release (`make test` starts one shared stack per release).

/// `on_each_eso!(name, body)`: a module `name` with one test per ESO release the stack runs
/// (`name::eso_v0_20_4`, `name::eso_v0_16_2`), each awaiting `body(release)`, `body` an async
/// function of the enclosing module. Attributes before `name` (doc comments) go on the module.
/// `cargo test --test stack -- eso_v0_16_2` runs every test of one release.
macro_rules! on_each_eso {
    ($(#[$meta:meta])* $name:ident, $body:ident) => {
        $(#[$meta])*
        mod $name {
            use crate::common::Eso;

            #[tokio::test]
            async fn eso_v0_20_4() {
                super::$body(Eso::V0_20_4).await
            }

            #[tokio::test]
            async fn eso_v0_16_2() {
                super::$body(Eso::V0_16_2).await
            }
        }
    };
}

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
