//! ClusterExternalSecrets and the ExternalSecrets that name one as owner. An owner reference
//! is written by whoever wrote the ExternalSecret, so a tenant can copy one onto their own;
//! the parent is patched instead of the child only when a watched ClusterExternalSecret
//! confirms it: the same uid, a child provisioned in that namespace, under that name. The
//! rest are what they are, plain ExternalSecrets (patched themselves), and counted.

use std::sync::Arc;

use super::model::ClusterExternalSecret;
use super::{Index, Reader, ResourceKey};

impl Index {
    pub fn apply_cluster_external_secret(&mut self, ces: ClusterExternalSecret) {
        let name: Box<str> = ces.name.as_str().into();
        self.clusters.insert(name.clone(), ces);
        self.judge_children(&name);
    }

    pub fn delete_cluster_external_secret(&mut self, name: &str) {
        if self.clusters.remove(name).is_some() {
            self.judge_children(name);
        }
    }

    /// Makes the ClusterExternalSecrets exactly `list` (after a watch re-list).
    pub fn replace_cluster_external_secrets(&mut self, list: Vec<ClusterExternalSecret>) {
        let gone: Vec<Box<str>> = self
            .clusters
            .keys()
            .filter(|k| !list.iter().any(|c| c.name == ***k))
            .cloned()
            .collect();
        for name in gone {
            self.delete_cluster_external_secret(&name);
        }
        for ces in list {
            self.apply_cluster_external_secret(ces);
        }
    }

    /// Why this reader's ClusterExternalSecret owner reference is not trusted, if it has one
    /// that is not.
    pub fn untrusted_owner(&self, key: &ResourceKey) -> Option<&str> {
        self.untrusted.get(key).map(String::as_str)
    }

    /// ExternalSecrets whose ClusterExternalSecret owner reference is not trusted.
    pub fn untrusted_owners(&self) -> impl Iterator<Item = (&ResourceKey, &str)> {
        self.untrusted.iter().map(|(k, why)| (&**k, why.as_str()))
    }

    /// Whether the reader's parent, if any, is patched in its place.
    pub(super) fn parent_trusted(&self, key: &ResourceKey, reader: &Reader) -> bool {
        reader.parent.is_some() && !self.untrusted.contains_key(key)
    }

    /// Judges one reader's owner reference (after it was filed or replaced).
    pub(super) fn judge_parent(&mut self, key: &Arc<ResourceKey>) {
        let verdict = self.readers.get(key).and_then(|reader| {
            let owner = reader.parent.as_deref()?;
            let why = match self.clusters.get(owner.name.as_str()) {
                None => Err("no such ClusterExternalSecret".to_owned()),
                Some(ces) => ces.owns(reader, owner),
            };
            Some(why.map_err(|why| {
                format!(
                    "owner reference to ClusterExternalSecret {} not trusted ({why}): patched as a plain ExternalSecret",
                    crate::text::truncate(&owner.name, 253)
                )
            }))
        });
        match verdict {
            Some(Err(why)) => {
                self.untrusted.insert(key.clone(), why);
            }
            _ => {
                self.untrusted.remove(key);
            }
        }
    }

    /// Judges every reader that names the ClusterExternalSecret `name` as owner.
    fn judge_children(&mut self, name: &str) {
        let claimants: Vec<Arc<ResourceKey>> = self
            .by_parent
            .get(name)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        for key in claimants {
            self.judge_parent(&key);
        }
    }
}
