//! The integration tests that need no local stack: the crate's shape (its import graph), the
//! command line, the SNS signature checks against real AWS-signed fixtures (tests/data/sns),
//! and the certificate fetch path against a hostile loopback HTTPS "SNS". One test binary (every test binary links the whole
//! crate); `cargo test --test offline` runs them without a stack.

mod architecture;
mod cli;
mod sns_fixtures;
mod sns_hostile;
