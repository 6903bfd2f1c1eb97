//! The integration tests that must run with nothing else on the machine's 2 cores: the soak
//! (latency and memory over time) and the attacks (each measures the service under its own
//! attack). Each holds [`ALONE`] for its whole run, and Cargo runs one test binary at a time,
//! so none overlaps another test of `make test`. Like tests/stack, they use the shared stack.

mod attacks;
mod outsider;
mod soak;
mod tenants;

/// Held by each test of this binary for its whole run.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the tests share: the harness (harness/, `ssm-resync-harness`) and the service's
/// executable, which Cargo names only to this package's own tests.
mod common {
    pub use ssm_resync_harness::*;

    /// The service under test.
    pub const BIN: &str = env!("CARGO_BIN_EXE_ssm-resync");
}
