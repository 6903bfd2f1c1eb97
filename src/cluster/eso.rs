//! Which External Secrets Operator the cluster runs, as far as a force-sync cares, read from
//! what the cluster shows: ESO's CustomResourceDefinitions. (The controller's own version is
//! not visible to a client without reading Deployments in ESO's namespace; the CRDs are
//! cluster-scoped, one `get` each, and upgraded with ESO by its chart.)
//!
//! What differs between releases for a tool that triggers re-syncs (docs/eso-versions.md has
//! the whole table, with source references):
//! - A ClusterExternalSecret's children. ESO writes each child's annotations from the
//!   parent's `spec.externalSecretMetadata.annotations`, replacing whatever the child had
//!   (`CreateOrUpdate`, v0.16.2 and v2.9.0 alike), and re-runs on every change of a child it
//!   owns: an annotation patched onto a child is undone within milliseconds, and ESO's
//!   ExternalSecret controller may see the child after the undo, with nothing to refresh.
//!   From v0.20.0 the parent's own `external-secrets.io/force-sync` annotation is copied to
//!   every child as well; before, only the spec's annotations are.

use serde_json::Value;

/// How a ClusterExternalSecret's children are made to re-sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CesTrigger {
    /// Patch the parent's `external-secrets.io/force-sync` annotation, which ESO v0.20.0 and
    /// later copy to every child. Metadata only: the parent's spec and generation stay.
    ParentAnnotation,
    /// Patch `spec.externalSecretMetadata.annotations.<--annotation>` on the parent. Every ESO
    /// release copies these to every child, so this works before v0.20.0 too; it changes the
    /// parent's spec (one key of a map, owned by this service's field manager).
    SpecAnnotations,
}

impl CesTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParentAnnotation => "annotation",
            Self::SpecAnnotations => "spec",
        }
    }
}

/// `--ces-trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CesTriggerFlag {
    /// Read ESO's ClusterExternalSecret CRD: `annotation` for v0.20.0 and later, else `spec`.
    Auto,
    /// The parent's `external-secrets.io/force-sync` annotation (ESO v0.20.0 and later).
    Annotation,
    /// The parent's `spec.externalSecretMetadata.annotations` (every ESO release).
    Spec,
}

/// The CRD whose schema tells the releases apart.
pub const CES_CRD: &str = "clusterexternalsecrets.external-secrets.io";

/// What a ClusterExternalSecret CRD says about the release that installed it, and why.
///
/// The marker: ESO v0.20.0, the release that started copying the parent's force-sync
/// annotation to its children, added `spec.externalSecretSpec.target.template.metadata.finalizers`
/// to the CRD: the one schema difference between v0.19.2 and v0.20.0
/// (`deploy/crds/bundle.yaml`); every later release keeps it (v2.9.0 has it). A CRD without the marker, or one that cannot be read, gets
/// the spec trigger, which works on every release.
pub fn ces_trigger_from_crd(crd: &Value, version: &str) -> (CesTrigger, String) {
    let Some(versions) = crd.pointer("/spec/versions").and_then(Value::as_array) else {
        return (
            CesTrigger::SpecAnnotations,
            format!("{CES_CRD} has no spec.versions"),
        );
    };
    let schema = versions
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
        .or_else(|| {
            versions
                .iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|v| v.pointer("/schema/openAPIV3Schema"));
    let marker = schema
        .and_then(|s| {
            s.pointer(
                "/properties/spec/properties/externalSecretSpec/properties/target/properties/template/properties/metadata/properties/finalizers",
            )
        })
        .is_some();
    if marker {
        (
            CesTrigger::ParentAnnotation,
            format!(
                "{CES_CRD} has spec.externalSecretSpec.target.template.metadata.finalizers: ESO v0.20.0 or later, which copies the parent's external-secrets.io/force-sync to its children"
            ),
        )
    } else {
        (
            CesTrigger::SpecAnnotations,
            format!(
                "{CES_CRD} lacks spec.externalSecretSpec.target.template.metadata.finalizers: ESO before v0.20.0, which copies only spec.externalSecretMetadata.annotations to its children"
            ),
        )
    }
}

/// Reads the CRD from the cluster and decides; a CRD that cannot be read decides `spec`.
pub async fn detect_ces_trigger(client: &kube::Client, version: &str) -> (CesTrigger, String) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    match api.get(CES_CRD).await {
        Ok(crd) => match serde_json::to_value(&crd) {
            Ok(v) => ces_trigger_from_crd(&v, version),
            Err(e) => (CesTrigger::SpecAnnotations, format!("{CES_CRD}: {e}")),
        },
        Err(e) => (
            CesTrigger::SpecAnnotations,
            format!(
                "cannot read the {CES_CRD} CRD ({e}); the spec trigger works on every ESO release"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A CRD whose v1 template metadata has these properties (the shape of ESO's
    /// `deploy/crds/bundle.yaml`: v0.19.2 has annotations and labels, v0.20.0 to v2.9.0 add
    /// finalizers).
    fn crd(template_metadata_props: Value) -> Value {
        json!({"spec": {"versions": [
            {"name": "v1beta1", "storage": false, "schema": {"openAPIV3Schema": {"properties": {"spec": {"properties": {}}}}}},
            {"name": "v1", "storage": true, "schema": {"openAPIV3Schema": {"properties": {"spec": {"properties": {
                "externalSecretMetadata": {"properties": {"annotations": {}, "labels": {}}},
                "externalSecretSpec": {"properties": {"target": {"properties": {"template": {"properties": {
                    "metadata": {"properties": template_metadata_props}}}}}}}}}}}}}
        ]}})
    }

    #[test]
    fn the_finalizers_field_marks_eso_0_20_and_later() {
        let old = crd(json!({"annotations": {}, "labels": {}}));
        let new = crd(json!({"annotations": {}, "finalizers": {}, "labels": {}}));
        assert_eq!(
            ces_trigger_from_crd(&old, "v1").0,
            CesTrigger::SpecAnnotations
        );
        assert_eq!(
            ces_trigger_from_crd(&new, "v1").0,
            CesTrigger::ParentAnnotation
        );
        // The version the service reads is the one looked at.
        assert_eq!(
            ces_trigger_from_crd(&new, "v1beta1").0,
            CesTrigger::SpecAnnotations
        );
        // An unknown version falls back to the storage version.
        assert_eq!(
            ces_trigger_from_crd(&new, "v2").0,
            CesTrigger::ParentAnnotation
        );
    }

    #[test]
    fn anything_unreadable_gets_the_trigger_that_works_everywhere() {
        for v in [json!({}), json!({"spec": {"versions": "x"}}), json!(null)] {
            let (t, why) = ces_trigger_from_crd(&v, "v1");
            assert_eq!(t, CesTrigger::SpecAnnotations, "{why}");
        }
    }
}
