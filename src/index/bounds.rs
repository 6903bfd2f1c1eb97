//! What one resource and one namespace may put into the index. A tenant may write an
//! ExternalSecret of 9,000 entries (about 1.2 MB, under etcd's limit) and as many as their
//! quota allows: unbounded, that is the service's memory. Past `max_references_per_object`
//! a resource's further references are left out; past `max_references_per_namespace` a
//! resource is left out whole, until an update of it (ESO writes its status on every sync)
//! finds room. What is left out is reported (`rejected`: Events, `explain`) and counted;
//! changes to it reach the Secret at ESO's own refresh, not at once.

use std::sync::Arc;

use super::{Index, Reader, RejectedReference, ResourceKey};

impl Index {
    /// Bounds a reader about to be filed (its old self already removed; its references
    /// already cut to the per-object bound from the `written` it had), and counts what it keeps
    /// against its namespace.
    pub(super) fn bound(&mut self, key: &Arc<ResourceKey>, reader: &mut Reader, written: usize) {
        let (per_object, per_namespace) = (
            self.config.max_references_per_object,
            self.config.max_references_per_namespace,
        );
        let mut left_out = None;
        if written > per_object {
            left_out = Some((
                format!("spec: references {} to {written}", per_object + 1),
                format!(
                    "{written} references, past --max-references-per-object {per_object}: the {} after the first {per_object} are not indexed; changes to them reach the Secret at ESO's own refresh",
                    written - per_object
                ),
                written - per_object,
            ));
        }
        let here = self
            .references_by_namespace
            .get(key.namespace.as_str())
            .copied()
            .unwrap_or(0);
        if here + reader.references.len() > per_namespace {
            left_out = Some((
                "spec".to_owned(),
                format!(
                    "namespace {} holds {here} references, --max-references-per-namespace {per_namespace}: none of this resource's {written} is indexed (until an update finds room); changes to them reach the Secret at ESO's own refresh",
                    crate::text::truncate(&key.namespace, 63)
                ),
                written,
            ));
            reader.references = Vec::new();
        }
        *self
            .references_by_namespace
            .entry(key.namespace.as_str().into())
            .or_default() += reader.references.len();
        if let Some((reference, reason, n)) = left_out {
            self.left_out_references += n;
            self.left_out.insert(
                key.clone(),
                (
                    RejectedReference {
                        reader: (**key).clone(),
                        reference,
                        reason,
                    },
                    n,
                ),
            );
        }
    }

    /// Forgets what was left out of a reader being removed.
    pub(super) fn unbound(&mut self, key: &ResourceKey) {
        if let Some((_, n)) = self.left_out.remove(key) {
            self.left_out_references -= n;
        }
    }

    pub(super) fn uncount_references(&mut self, namespace: &str, n: usize) {
        if let Some(here) = self.references_by_namespace.get_mut(namespace) {
            *here -= n;
            if *here == 0 {
                self.references_by_namespace.remove(namespace);
            }
        }
    }
}
