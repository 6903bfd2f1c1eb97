//! Command line and environment: every flag has an `SSM_RESYNC_*` equivalent.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::EsoVersion;

#[derive(Debug, Parser)]
#[command(
    name = "ssm-resync",
    version,
    about = "Force-sync ExternalSecrets the moment an AWS SSM parameter changes (EventBridge → SNS → this service → Kubernetes)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook and the admin listener against the current Kubernetes context.
    Serve(Box<ServeArgs>),
    /// Print an SNS Notification envelope around a Parameter Store Change event, for curl tests.
    Sample(SampleArgs),
    /// Write DIR/key.pem and a self-signed DIR/cert.pem shaped like SNS's signing certificate.
    DevCert(DevCertArgs),
    /// SNS tools.
    #[command(subcommand)]
    Sns(SnsCommand),
    /// Show which resources a change would force-sync and why (and the near misses), from
    /// the cluster of the current kubeconfig. Patches nothing.
    Explain(ExplainArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// An SNS envelope (its Message is used; the signature is not checked) or a bare event
    /// (EventBridge or the plain test format); `-` for stdin.
    pub file: String,

    #[arg(long, short, value_enum, default_value = "table")]
    pub output: Output,

    /// external-secrets.io API version to read.
    #[arg(long, env = "SSM_RESYNC_ESO_VERSION", value_enum, default_value = "v1")]
    pub eso_version: EsoVersion,

    /// Also read kubernetes-external-secrets (kubernetes-client.io/v1) ExternalSecrets.
    #[arg(long, env = "SSM_RESYNC_KES")]
    pub kes: bool,

    #[command(flatten)]
    pub index: IndexArgs,
}

/// What the index needs to know about the cluster's ESO (shared by `serve` and `explain`).
#[derive(Debug, Clone, Args)]
pub struct IndexArgs {
    /// The AWS account ESO's own credentials read (stores without `role`). Unset: unknown,
    /// such stores match changes from any account (spurious re-syncs, never a miss).
    #[arg(long, env = "SSM_RESYNC_ESO_ACCOUNT", value_parser = parse_account)]
    pub eso_account: Option<String>,

    /// The controller class(es) the cluster's ESO serves (its --controller-class; stores
    /// with another spec.controller are ignored by it). Unset: every class.
    #[arg(
        long = "eso-controller-class",
        env = "SSM_RESYNC_ESO_CONTROLLER_CLASS",
        value_delimiter = ','
    )]
    pub eso_controller_classes: Vec<String>,

    /// Force-sync resources that also take values from generators (Password, ECR token, ...):
    /// every sync regenerates those values. Off: such resources are reported (log, metric,
    /// NotForceable Event), not patched.
    #[arg(long, env = "SSM_RESYNC_FORCE_GENERATORS")]
    pub force_generators: bool,
}

impl IndexArgs {
    pub fn config(&self) -> crate::index::IndexConfig {
        crate::index::IndexConfig {
            eso_account: self.eso_account.clone(),
            controller_classes: self.eso_controller_classes.clone(),
            force_generators: self.force_generators,
        }
    }
}

fn parse_account(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err(format!("an AWS account id is 12 digits, got {s:?}"))
    }
}

#[derive(Debug, Subcommand)]
pub enum SnsCommand {
    /// Verify one SNS message body offline, as `serve` would: prints `valid` (exit 0) or
    /// `invalid: <reason>` (exit 1) with the reason from the same set the server uses.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The message body as SNS POSTed it (`-` for stdin).
    pub file: String,

    /// Use this PEM certificate instead of fetching SigningCertURL. Replaces only the fetch:
    /// the URL policy, subject and validity checks still apply.
    #[arg(long)]
    pub cert: Option<String>,

    /// Check certificate validity and message age as of this time (RFC 3339), e.g. the
    /// message's own Timestamp for an archived message.
    #[arg(long)]
    pub at: Option<String>,

    /// Topics to allow (repeatable). Without any, the topic check is skipped and said so.
    #[arg(long = "topic-arn")]
    pub topic_arns: Vec<String>,

    /// Reject messages older than this (as the server's --max-message-age).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub max_message_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Public listener: POST /sns only. This is what the load balancer exposes.
    #[arg(long, env = "SSM_RESYNC_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Serve the public webhook (POST /sns on --listen). `off` for a cluster that pulls its
    /// notifications from SQS only (--sqs-queue-url): then only the admin port opens.
    #[arg(long, env = "SSM_RESYNC_WEBHOOK", value_enum, default_value = "on")]
    pub webhook: Switch,

    /// SQS queue to pull notifications from, subscribed to the topic with raw message
    /// delivery off (for clusters SNS cannot reach); repeatable (comma-separated in the env
    /// var). Messages are verified as the webhook verifies them, but for their age.
    #[arg(
        long = "sqs-queue-url",
        env = "SSM_RESYNC_SQS_QUEUE_URL",
        value_delimiter = ','
    )]
    pub sqs_queue_urls: Vec<String>,

    /// Also accept EventBridge events that a rule put on the queue directly. They carry no
    /// signature: only the queue's policy, which must admit nothing but your rules and the
    /// topic, vouches for them.
    #[arg(long, env = "SSM_RESYNC_SQS_ACCEPT_EVENTBRIDGE")]
    pub sqs_accept_eventbridge: bool,

    /// Receive loops per queue, each holding at most 10 messages in flight.
    #[arg(long, env = "SSM_RESYNC_SQS_RECEIVERS", default_value_t = 2)]
    pub sqs_receivers: usize,

    /// Visibility timeout asked for at each receive and renewed every third of it while a
    /// message's patches run; a failed message comes again after a backoff (5 s doubling to
    /// 5 min), and the queue's redrive policy moves it to a dead-letter queue.
    #[arg(long, env = "SSM_RESYNC_SQS_VISIBILITY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sqs_visibility_timeout: Duration,

    /// Admin listener: /healthz, /readyz, /metrics. Never expose it.
    #[arg(long, env = "SSM_RESYNC_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// SNS topic ARN allowed to drive this service; repeatable (comma-separated in the env
    /// var). `*` matches within one ARN segment, e.g. arn:aws:sns:*:123456789012:ssm-changes.
    /// Required: messages from any other topic are rejected even when genuinely signed.
    #[arg(
        long = "topic-arn",
        env = "SSM_RESYNC_TOPIC_ARN",
        value_delimiter = ',',
        required = true
    )]
    pub topic_arns: Vec<String>,

    /// Pin a signing certificate for a SigningCertURL instead of fetching it: URL=FILE
    /// (repeatable; comma-separated in the env var). The URL must still have the AWS form and
    /// the certificate must still pass every check. For tests and local stacks.
    #[arg(
        long = "sns-signing-cert",
        env = "SSM_RESYNC_SNS_SIGNING_CERT",
        value_delimiter = ',',
        value_name = "URL=FILE"
    )]
    pub signing_certs: Vec<String>,

    /// Annotation set to a new value on every force-sync.
    #[arg(long, env = "SSM_RESYNC_ANNOTATION", default_value = "force-sync")]
    pub annotation: String,

    /// Answer each delivery within this time (SNS gives up after 15 s); 503 if patches are
    /// not all applied by then, so SNS redelivers.
    #[arg(long, env = "SSM_RESYNC_REQUEST_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_deadline: Duration,

    /// Largest accepted request body; larger ones get 413 without being buffered.
    #[arg(long, env = "SSM_RESYNC_MAX_BODY_BYTES", default_value_t = 512 * 1024)]
    pub max_body_bytes: usize,

    /// Deliveries larger than 16 KiB handled at once on the public port; beyond that such a
    /// request is answered 503 (reason `overloaded`) at once, so SNS retries it, instead of
    /// buffering another large body. Smaller ones (every change notification) need no slot.
    /// Default: what the memory limit affords, (cgroup `memory.max` − 64 MiB −
    /// `--max-connections` × 48 KiB) / (3 × `--max-body-bytes`), clamped to 4..=256; 256
    /// without a memory limit.
    #[arg(long, env = "SSM_RESYNC_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,

    /// Connections open at once on each port; while that many are open the port stops
    /// accepting, and new connections wait in the kernel's accept queue until one closes
    /// (metric `ssm_resync_accept_paused_total`).
    #[arg(long, env = "SSM_RESYNC_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// A connection must send a complete request head within this long, counted from when the
    /// server starts waiting for one (so idle keep-alive connections close after it too), and
    /// then its body within this long (408, reason `body_read_timeout`). Keep a load
    /// balancer's idle timeout below it.
    #[arg(long, env = "SSM_RESYNC_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,

    /// Patches in flight at once against the API server.
    #[arg(long, env = "SSM_RESYNC_PATCH_CONCURRENCY", default_value_t = 16)]
    pub patch_concurrency: usize,

    /// Retries of a patch on 409/429/5xx/transport errors (exponential backoff, 100 ms..2 s).
    #[arg(long, env = "SSM_RESYNC_PATCH_RETRIES", default_value_t = 5)]
    pub patch_retries: usize,

    /// Least time between two force-sync patches of one resource. The first change patches
    /// at once; changes arriving within the window share one follow-up patch.
    #[arg(long, env = "SSM_RESYNC_COALESCE_WINDOW", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub coalesce_window: Duration,

    /// Reject messages whose Timestamp is older than this (replay protection; SNS retries
    /// for at most an hour, keeping the original Timestamp).
    #[arg(long, env = "SSM_RESYNC_MAX_MESSAGE_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub max_message_age: Duration,

    /// The lowest SignatureVersion accepted: 1 accepts SHA-1 and SHA-256 signatures (SNS's
    /// default for a topic is 1), 2 refuses SHA-1 (the topic's SignatureVersion attribute must
    /// be 2, as infra/ sets it).
    #[arg(long, env = "SSM_RESYNC_MIN_SIGNATURE_VERSION", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub min_signature_version: u8,

    /// Timeout of one signing-certificate fetch.
    #[arg(long, env = "SSM_RESYNC_CERT_FETCH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub cert_fetch_timeout: Duration,

    /// external-secrets.io API version to watch and patch (v1beta1 only for old clusters).
    #[arg(long, env = "SSM_RESYNC_ESO_VERSION", value_enum, default_value = "v1")]
    pub eso_version: EsoVersion,

    /// Also watch and force-sync kubernetes-external-secrets (kubernetes-client.io/v1
    /// ExternalSecret). Its CRD must exist, or readiness never comes.
    #[arg(long, env = "SSM_RESYNC_KES")]
    pub kes: bool,

    /// How a ClusterExternalSecret's children are made to re-sync: `annotation` patches the
    /// parent's external-secrets.io/force-sync (ESO >= 0.20 copies it to the children),
    /// `spec` its spec.externalSecretMetadata.annotations (every ESO release copies those),
    /// `auto` reads ESO's ClusterExternalSecret CRD at start-up and every 10 minutes to tell
    /// the releases apart (docs/eso-versions.md).
    #[arg(
        long,
        env = "SSM_RESYNC_CES_TRIGGER",
        value_enum,
        default_value = "auto"
    )]
    pub ces_trigger: crate::cluster::eso::CesTriggerFlag,

    #[command(flatten)]
    pub index: IndexArgs,

    /// Record Kubernetes Events (ForceSync, NotForceable) on the resources acted on.
    #[arg(long, env = "SSM_RESYNC_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub events: bool,

    /// At most one Kubernetes Event per resource and reason within this interval.
    #[arg(long, env = "SSM_RESYNC_EVENT_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub event_interval: Duration,

    /// A watch silent (no event, bookmark or clean end) for longer than this is restarted
    /// with a fresh list; readiness fails until that list is in the index. A list response
    /// silent for this long fails and is retried.
    #[arg(long, env = "SSM_RESYNC_WATCH_STALL_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub watch_stall_timeout: Duration,

    /// How each kind is read at start-up: `list` (one LIST served from the API server's watch
    /// cache) or `watch-list` (a watch with sendInitialEvents, on by default in Kubernetes 1.32
    /// and 1.34+; a server that refuses it is read with `list`). Re-lists after a stall or an
    /// expired version always page through etcd.
    #[arg(long, env = "SSM_RESYNC_INITIAL_LIST", value_enum, default_value_t = crate::cluster::watch::InitialList::List)]
    pub initial_list: crate::cluster::watch::InitialList,

    /// Catch-up sweep period: compare referenced parameters' LastModifiedDate (SSM
    /// DescribeParameters, metadata only) with each reader's last sync and force-sync the
    /// stale ones; also runs at start-up. 0 disables. The default, an hour, is ESO's own
    /// default refreshInterval: a change whose event was lost reaches its Secret no later than
    /// ESO's default polling would have brought it, for ⌈names/50⌉ calls a region an hour.
    #[arg(long, env = "SSM_RESYNC_SWEEP_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// Lease (coordination.k8s.io) that elects the one replica that sweeps. Empty: sweep
    /// without a lease (a single replica).
    #[arg(
        long,
        env = "SSM_RESYNC_SWEEP_LEASE",
        default_value = "ssm-resync-sweep"
    )]
    pub sweep_lease: String,

    /// Namespace of the sweep Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long, env = "SSM_RESYNC_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Lease duration: how long a dead leader keeps the sweep before another replica takes it.
    #[arg(long, env = "SSM_RESYNC_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// How long after a patch the operator has to show a refresh (ESO: a new
    /// status.syncedResourceVersion with Ready=True; KES: a new status.lastSync) before the
    /// outcome is reported as no response (NotRefreshed Event, refresh_total{outcome}).
    #[arg(long, env = "SSM_RESYNC_CONFIRM_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub confirm_timeout: Duration,

    /// Accept the plain test format ({"parameters": [...], "region": ...}) in verified
    /// notifications. Off by default: anyone allowed to publish to the topic could name any 100
    /// parameters with it. The local stack turns it on for curl tests.
    #[arg(long, env = "SSM_RESYNC_ACCEPT_PLAIN_FORMAT")]
    pub accept_plain_format: bool,

    /// Do everything but the patch; log what would be patched.
    #[arg(long, env = "SSM_RESYNC_DRY_RUN")]
    pub dry_run: bool,

    /// Log format.
    #[arg(
        long,
        env = "SSM_RESYNC_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Validate the flags (and pinned certificates) and exit without connecting anywhere.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Parameter name, e.g. /app/db/password.
    #[arg(long, required_unless_present = "message", conflicts_with = "message")]
    pub parameter: Option<String>,

    /// Wrap this message instead (a file, or - for stdin), e.g. the plain test format
    /// {"parameters": ["/app/db/password"], "region": "us-east-1"}.
    #[arg(long, value_name = "FILE")]
    pub message: Option<String>,

    /// Region the event comes from.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,

    /// Account the event comes from (default: the topic's account).
    #[arg(long)]
    pub account: Option<String>,

    /// Topic the envelope claims (default: the first of SSM_RESYNC_TOPIC_ARN).
    #[arg(
        long = "topic-arn",
        env = "SSM_RESYNC_TOPIC_ARN",
        value_delimiter = ','
    )]
    pub topic_arns: Vec<String>,

    /// Parameter Store operation.
    #[arg(long, default_value = "Update", value_parser = ["Create", "Update", "Delete", "LabelParameterVersion"])]
    pub operation: String,

    /// RSA private key (PEM) to sign with (SignatureVersion 2). Without it the envelope is
    /// unsigned and the service will answer 403.
    #[arg(long, env = "SSM_RESYNC_SAMPLE_SIGN_KEY")]
    pub sign_key: Option<String>,

    /// SigningCertURL to put in the envelope (pin the matching certificate on the server).
    #[arg(
        long,
        env = "SSM_RESYNC_SAMPLE_CERT_URL",
        default_value = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem"
    )]
    pub cert_url: String,

    /// Print only the EventBridge event (what to publish to the topic), not the SNS envelope.
    #[arg(long)]
    pub event_only: bool,
}

#[derive(Debug, Args)]
pub struct DevCertArgs {
    /// Directory to write key.pem and cert.pem into (created if missing).
    #[arg(long)]
    pub out: std::path::PathBuf,

    /// Validity in days.
    #[arg(long, default_value_t = 3650)]
    pub days: i64,
}

impl ServeArgs {
    /// `--max-concurrent-requests`, or what the container's memory limit affords.
    pub fn max_concurrent_requests(&self) -> usize {
        self.max_concurrent_requests
            .unwrap_or_else(|| {
                concurrency_for(memory_limit(), self.max_body_bytes, self.max_connections)
            })
            .max(1)
    }
}

/// Large deliveries that fit in `limit` bytes of memory. Set aside: 64 MiB for the process
/// itself (index, watch caches, MessageId dedupe, runtime) and, per allowed connection, its
/// read buffer (32 KiB) plus a small body held three times (16 KiB each way, rounded into
/// the 48 KiB). Each large delivery may hold its body three times over (the buffered bytes,
/// the parsed envelope, the decoded message). Clamped to 4..=256; 256 without a limit.
pub fn concurrency_for(limit: Option<u64>, max_body_bytes: usize, max_connections: usize) -> usize {
    const RESERVED: u64 = 64 << 20;
    const PER_CONNECTION: u64 = 48 << 10;
    match limit {
        None => 256,
        Some(l) => {
            let per = 3 * (max_body_bytes.max(1) as u64);
            let free = l
                .saturating_sub(RESERVED)
                .saturating_sub(PER_CONNECTION * max_connections as u64);
            (free / per).clamp(4, 256) as usize
        }
    }
}

/// The cgroup memory limit of this process (v2 `memory.max`, else v1 `memory.limit_in_bytes`);
/// `None` when there is none or it cannot be read.
fn memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let v = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    // "max" (v2) or a huge number (v1: 2^63 rounded to the page size) mean no limit.
    v.trim().parse::<u64>().ok().filter(|&n| n < (1 << 62))
}

#[cfg(test)]
mod tests {
    use super::concurrency_for;

    #[test]
    fn concurrency_follows_the_memory_limit() {
        // The shipped manifests: 128 MiB limit, 512 KiB bodies, 512 connections → 26.
        assert_eq!(concurrency_for(Some(128 << 20), 512 * 1024, 512), 26);
        assert_eq!(concurrency_for(Some(256 << 20), 512 * 1024, 512), 112);
        // A tight limit still leaves a few slots; a generous one is capped.
        assert_eq!(concurrency_for(Some(64 << 20), 512 * 1024, 512), 4);
        assert_eq!(concurrency_for(Some(16 << 30), 512 * 1024, 512), 256);
        assert_eq!(concurrency_for(None, 512 * 1024, 512), 256);
        // Bigger bodies, fewer slots.
        assert_eq!(concurrency_for(Some(256 << 20), 4 << 20, 512), 14);
    }
}
