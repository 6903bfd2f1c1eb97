//! The Kubernetes side: watches that keep the index current, and the patcher that forces a
//! re-sync.

pub mod client;
pub mod confirm;
pub mod eso;
pub mod events;
pub mod patch;
pub mod watch;

use kube::discovery::ApiResource;

/// Which API version of external-secrets.io to read. ESO serves `v1` (v1beta1 is unserved
/// since v0.17); `v1beta1` is an opt-in for clusters that have not upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EsoVersion {
    V1,
    V1beta1,
}

impl EsoVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1beta1 => "v1beta1",
        }
    }
}

pub fn eso_resource(version: EsoVersion, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "external-secrets.io".into(),
        version: version.as_str().into(),
        api_version: format!("external-secrets.io/{}", version.as_str()),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub fn external_secret_resource(version: EsoVersion) -> ApiResource {
    eso_resource(version, "ExternalSecret", "externalsecrets")
}

pub fn cluster_external_secret_resource(version: EsoVersion) -> ApiResource {
    eso_resource(version, "ClusterExternalSecret", "clusterexternalsecrets")
}

/// kubernetes-external-secrets' ExternalSecret.
pub fn kes_resource() -> ApiResource {
    ApiResource {
        group: "kubernetes-client.io".into(),
        version: "v1".into(),
        api_version: "kubernetes-client.io/v1".into(),
        kind: "ExternalSecret".into(),
        plural: "externalsecrets".into(),
    }
}
