//! `ssm-resync explain EVENT_FILE`: which resources a change would force-sync, through which
//! reference and why, plus the near misses (same name, other store, region, service, account
//! or namespace) and the matches that ignore force-sync. Reads the cluster; patches nothing.

use std::time::Duration;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject};
use parking_lot::RwLock;
use serde_json::{Value, json};

use crate::cluster::EsoVersion;
use crate::cluster::watch::{self, Watches};
use crate::event::{Change, Decoded};
use crate::index::{Index, Lookup, Match, NearMiss, ReaderKind, TargetKind};
use crate::metrics::Metrics;

/// Decodes a file holding an SNS envelope (its `Message` is used; the signature is not
/// checked here) or a bare event.
pub fn changes_from(text: &str) -> anyhow::Result<Vec<Change>> {
    let value: Value = serde_json::from_str(text).context("the file is not JSON")?;
    let message = match (
        value.get("Type"),
        value.get("Message").and_then(Value::as_str),
    ) {
        (Some(_), Some(m)) => m.to_owned(),
        _ => text.to_owned(),
    };
    match crate::event::decode(&message).map_err(|e| anyhow::anyhow!("malformed event: {e}"))? {
        Decoded::Changes(c) => Ok(c),
        Decoded::Ignored { kind, detail } => {
            anyhow::bail!("this service ignores such messages ({kind}: {detail})")
        }
    }
}

/// Builds the index the way `serve` does: one list of each kind the service would watch,
/// parsed by the same code. Consistent (paged, from etcd) rather than from the watch cache:
/// a one-off answer should reflect the latest writes.
pub async fn index_from_cluster(
    client: &kube::Client,
    version: EsoVersion,
    kes: bool,
    config: crate::index::IndexConfig,
) -> anyhow::Result<Index> {
    let index = RwLock::new(Index::with_config(config));
    let metrics = Metrics::new();
    for kind in Watches::new(kes).states.iter().map(|s| s.kind) {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource(version));
        watch::list(
            &api,
            kind,
            &index,
            &metrics,
            watch::Freshness::Consistent,
            Duration::from_secs(60),
        )
        .await
        .with_context(|| format!("listing {}", kind.as_str()))?;
    }
    Ok(index.into_inner())
}

/// All changes' lookups merged, each target once.
pub fn explain_all(index: &Index, changes: &[Change]) -> Lookup {
    let mut all = Lookup::default();
    for c in changes {
        let l = index.explain(c);
        for m in l.targets {
            if !all.targets.iter().any(|t| t.target == m.target) {
                all.targets.push(m);
            }
        }
        all.unforceable.extend(l.unforceable);
        all.near_misses.extend(l.near_misses);
        all.rejected = l.rejected;
    }
    all
}

fn target_json(m: &Match) -> Value {
    json!({
        "kind": m.target.kind.as_str(),
        "api_version": m.target.kind.api_version(),
        "namespace": (m.target.kind != TargetKind::ClusterExternalSecret).then_some(&m.target.namespace),
        "name": m.target.name,
        "reference": m.reference,
        "reader": format!("{}/{}", m.reader.namespace, m.reader.name),
        "reason": m.reason,
        "deferred_until": deferred_until(m),
    })
}

/// When a closed ESO sync window holds the force-sync back now: the window's opening (`null`
/// when it is open, or the resource has no windows).
fn deferred_until(m: &Match) -> Option<String> {
    let now = time::OffsetDateTime::now_utc();
    let w = m.sync_windows.as_ref().filter(|w| !w.open_at(now))?;
    Some(match w.next_open(now) {
        Some(at) => at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        None => "never (the window does not open within a year)".into(),
    })
}

fn miss_json(n: &NearMiss) -> Value {
    json!({
        "kind": "ExternalSecret",
        "api_version": match n.reader.kind { ReaderKind::ExternalSecret => "external-secrets.io", ReaderKind::KesExternalSecret => "kubernetes-client.io/v1" },
        "namespace": n.reader.namespace,
        "name": n.reader.name,
        "reference": n.reference,
        "reason": n.reason,
    })
}

pub fn to_json(l: &Lookup) -> Value {
    json!({
        "targets": l.targets.iter().map(target_json).collect::<Vec<_>>(),
        "near_misses": l.near_misses.iter().map(miss_json).collect::<Vec<_>>(),
        "unforceable": l.unforceable.iter().map(target_json).collect::<Vec<_>>(),
        "rejected_references": l.rejected.iter().map(|r| miss_json(&NearMiss {
            reader: r.reader.clone(),
            reference: r.reference.clone(),
            reason: r.reason.clone(),
        })).collect::<Vec<_>>(),
    })
}

pub fn to_table(changes: &[Change], l: &Lookup) -> String {
    let mut out = String::new();
    for c in changes {
        out.push_str(&format!(
            "change: {} {} in {} (account {}, {})\n",
            c.service.as_str(),
            c.name,
            c.region,
            c.account.as_deref().unwrap_or("unknown"),
            c.operation.as_str()
        ));
    }
    let section = |out: &mut String, title: &str, rows: Vec<[String; 3]>| {
        out.push_str(&format!("\n{title} ({})\n", rows.len()));
        if rows.is_empty() {
            out.push_str("  none\n");
        }
        for [what, reference, why] in rows {
            out.push_str(&format!("  {what:<48} {reference:<34} {why}\n"));
        }
    };
    section(
        &mut out,
        "WOULD FORCE-SYNC",
        l.targets
            .iter()
            .map(|m| {
                let why = match deferred_until(m) {
                    Some(at) => format!("{}; sync window closed: deferred until {at}", m.reason),
                    None => m.reason.clone(),
                };
                [m.target.to_string(), m.reference.clone(), why]
            })
            .collect(),
    );
    section(
        &mut out,
        "MATCH BUT IGNORE FORCE-SYNC",
        l.unforceable
            .iter()
            .map(|m| [m.target.to_string(), m.reference.clone(), m.reason.clone()])
            .collect(),
    );
    section(
        &mut out,
        "NEAR MISSES",
        l.near_misses
            .iter()
            .map(|n| {
                [
                    format!("ExternalSecret {}/{}", n.reader.namespace, n.reader.name),
                    n.reference.clone(),
                    n.reason.clone(),
                ]
            })
            .collect(),
    );
    if !l.rejected.is_empty() {
        section(
            &mut out,
            "REFERENCES NOT EVALUATED AS WRITTEN (anywhere in the cluster)",
            l.rejected
                .iter()
                .map(|r| {
                    [
                        format!("ExternalSecret {}/{}", r.reader.namespace, r.reader.name),
                        r.reference.clone(),
                        r.reason.clone(),
                    ]
                })
                .collect(),
        );
    }
    out
}
