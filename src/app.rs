//! The program's commands: `serve` wires the parts together; `sample`, `dev-cert`, `sns
//! verify` and `explain` turn their flags into calls of the modules that do the work.
//! `main.rs` only parses and dispatches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use parking_lot::RwLock;

use crate::cluster::confirm::Confirmations;
use crate::cluster::events::Events;
use crate::cluster::patch::{Resources, Trigger, TriggerConfig};
use crate::cluster::watch::{self, Watches};
use crate::config::{DevCertArgs, ExplainArgs, Output, SampleArgs, ServeArgs, Switch, VerifyArgs};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::queue::{Queue, QueueConfig};
use crate::resync::{self, Resync};
use crate::sns::cert::CertStoreConfig;
use crate::sns::sign::{SigningKey, dev_cert};
use crate::sns::{CertStore, Envelope, SdkConfirmer, TopicPolicy, Verifier};

/// Builds the verifier from flags; shared by `serve` and `serve --check-config`.
fn verifier(args: &ServeArgs, metrics: &Arc<Metrics>) -> anyhow::Result<Verifier> {
    let topics = TopicPolicy::new(&args.topic_arns)?;
    let m = metrics.clone();
    let mut certs = CertStore::new(CertStoreConfig {
        fetch_timeout: args.cert_fetch_timeout,
        ..Default::default()
    })
    .on_fetch(move |result| {
        m.cert_fetches
            .get_or_create(&crate::metrics::Result_ { result })
            .inc();
    });
    for spec in &args.signing_certs {
        certs
            .pin_spec(spec)
            .with_context(|| format!("--sns-signing-cert {spec}"))?;
    }
    Ok(Verifier::new(topics, Arc::new(certs))
        .with_max_age(args.max_message_age)
        .with_min_signature_version(args.min_signature_version))
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    metrics.preregister_rejections(crate::sns::Reject::REASONS);
    let verifier = verifier(&args, &metrics)?;
    check_serve_args(&args)?;
    if args.check_config {
        println!(
            "config ok: topics {:?}, {} pinned certificate(s), annotation {:?}, ESO {}",
            verifier.topics.patterns(),
            verifier.certs.pinned_count(),
            args.annotation,
            args.eso_version.as_str()
        );
        return Ok(());
    }

    let kube_config = kube::Config::infer()
        .await
        .context("loading Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let watch_client = crate::cluster::client::build(kube_config.clone())?;
    let cluster = cluster(&args, kube_config, &watch_client, &metrics).await?;
    let resync = Arc::new(Resync::new(resync::Parts {
        index: cluster.index.clone(),
        watches: cluster.watches.clone(),
        trigger: cluster.trigger,
        events: cluster.events,
        confirmations: cluster.confirmations.clone(),
        applied: crate::dedupe::Dedupe::new(
            args.max_message_age + crate::sns::verify::FUTURE_TOLERANCE,
            crate::dedupe::CAPACITY,
        ),
        accept_plain: args.accept_plain_format,
        metrics: metrics.clone(),
    }));
    if !args.sweep_interval.is_zero() {
        let leader = leader_channel(&args, watch_client.clone());
        tokio::spawn(crate::sweep::run(
            crate::sweep::SweepConfig {
                interval: args.sweep_interval,
                confirmations: cluster.confirmations,
                default_region: std::env::var("AWS_REGION")
                    .ok()
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok()),
            },
            cluster.index,
            cluster.watches,
            resync.clone(),
            metrics.clone(),
            leader,
        ));
    }
    let queues = queues(&args, &resync, &verifier, &metrics).await?;
    let admin = Arc::new(crate::http::Admin {
        resync: resync.clone(),
        metrics: metrics.clone(),
        accepting: Arc::new(AtomicBool::new(true)),
        conditions: queues.iter().map(|q| q.health()).collect(),
    });
    let webhook = (args.webhook == Switch::On).then(|| {
        Arc::new(crate::http::Webhook {
            resync,
            verifier,
            confirmer: Arc::new(SdkConfirmer::default()),
            metrics,
            max_body_bytes: args.max_body_bytes,
            large_slots: tokio::sync::Semaphore::new(args.max_concurrent_requests()),
            read_timeout: args.read_timeout,
            deadline: args.request_deadline,
            reject_log: Default::default(),
        })
    });
    listen(&args, webhook, admin, queues).await
}

/// One consumer per `--sqs-queue-url`, verifying as the webhook does but for the age limit:
/// the queue admits only the topic, so an old message is a change still to apply.
async fn queues(
    args: &ServeArgs,
    resync: &Arc<Resync>,
    verifier: &Verifier,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Vec<Arc<Queue>>> {
    let mut queues = Vec::new();
    for url in &args.sqs_queue_urls {
        let region = crate::queue::region_of(url)
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .with_context(|| {
                format!("--sqs-queue-url {url}: no region in the URL and no AWS_REGION")
            })?;
        let queue_verifier = Verifier::new(verifier.topics.clone(), verifier.certs.clone())
            .with_max_age(Duration::MAX)
            .with_min_signature_version(verifier.min_signature_version);
        queues.push(Arc::new(Queue::new(
            QueueConfig {
                url: url.clone(),
                receivers: args.sqs_receivers,
                visibility: args.sqs_visibility_timeout,
                max_body_bytes: args.max_body_bytes,
                accept_eventbridge: args.sqs_accept_eventbridge,
            },
            crate::queue::client(region).await,
            resync.clone(),
            queue_verifier,
            metrics.clone(),
        )));
    }
    Ok(queues)
}

/// Flag combinations clap cannot check.
fn check_serve_args(args: &ServeArgs) -> anyhow::Result<()> {
    if args.annotation.is_empty() {
        anyhow::bail!("--annotation must not be empty");
    }
    if args.watch_stall_timeout < Duration::from_secs(2) {
        anyhow::bail!(
            "--watch-stall-timeout must be at least 2s (the server ends each watch after half of it)"
        );
    }
    if args.webhook == Switch::Off && args.sqs_queue_urls.is_empty() {
        anyhow::bail!(
            "--webhook off needs at least one --sqs-queue-url: nothing would bring changes in"
        );
    }
    if args.sqs_visibility_timeout < Duration::from_secs(3) {
        anyhow::bail!(
            "--sqs-visibility-timeout must be at least 3s (it is renewed every third of it)"
        );
    }
    Ok(())
}

/// The Kubernetes side, running: the index fed by the watches, the trigger, the Events, the
/// confirmations.
struct Cluster {
    index: Arc<RwLock<Index>>,
    watches: Arc<Watches>,
    trigger: Trigger,
    events: Events,
    confirmations: Option<Confirmations>,
}

async fn cluster(
    args: &ServeArgs,
    kube_config: kube::Config,
    watch_client: &kube::Client,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Cluster> {
    // Patches answer an SNS request: they must fail fast rather than wait out long timeouts.
    let mut patch_config = kube_config;
    patch_config.connect_timeout = Some(Duration::from_secs(3));
    patch_config.read_timeout = Some(Duration::from_secs(5));
    patch_config.write_timeout = Some(Duration::from_secs(5));
    let patch_client = crate::cluster::client::build(patch_config)?;
    let trigger = Trigger::new(
        patch_client.clone(),
        Resources::new(args.eso_version),
        TriggerConfig {
            annotation: args.annotation.clone(),
            concurrency: args.patch_concurrency,
            dry_run: args.dry_run,
            max_retries: args.patch_retries,
            coalesce_window: args.coalesce_window,
            ..Default::default()
        },
        metrics.clone(),
    );
    let events = if args.events && !args.dry_run {
        Events::new(
            patch_client,
            args.event_interval,
            format!("external-secrets.io/{}", args.eso_version.as_str()),
            trigger.busy(),
            metrics.clone(),
        )
    } else {
        Events::disabled(metrics.clone())
    };
    let index = Arc::new(RwLock::new(Index::with_config(args.index.config())));
    let watches = Arc::new(Watches::new(args.kes));
    // A dry run patches nothing: there is no outcome to follow.
    let confirmations = (!args.dry_run).then(|| {
        Confirmations::new(
            args.confirm_timeout,
            index.clone(),
            metrics.clone(),
            events.clone(),
        )
    });
    watch::spawn_all(
        watch_client.clone(),
        args.eso_version,
        watch::WatchConfig {
            stall_timeout: args.watch_stall_timeout,
            confirmations: confirmations.clone(),
            events: Some(events.clone()),
            initial_list: args.initial_list,
        },
        index.clone(),
        &watches,
        metrics.clone(),
    );
    ces_trigger(args, watch_client, &trigger).await;
    if let Some(c) = &confirmations {
        trigger.set_confirmations(c.clone());
    }
    Ok(Cluster {
        index,
        watches,
        trigger,
        events,
        confirmations,
    })
}

/// Serves the webhook (if on) and the admin port and runs the queue consumers until SIGTERM or
/// Ctrl-C: readiness goes off first, in-flight deliveries and messages are finished.
async fn listen(
    args: &ServeArgs,
    webhook: Option<Arc<crate::http::Webhook>>,
    admin: Arc<crate::http::Admin>,
    queues: Vec<Arc<Queue>>,
) -> anyhow::Result<()> {
    let public = match &webhook {
        Some(_) => Some(
            crate::http::bind(args.listen)
                .with_context(|| format!("binding --listen {}", args.listen))?,
        ),
        None => None,
    };
    let admin_listener = crate::http::bind(args.admin_listen)
        .with_context(|| format!("binding --admin-listen {}", args.admin_listen))?;
    tracing::info!(
        listen = ?public.as_ref().map(|p| p.local_addr()).transpose()?,
        admin = %admin_listener.local_addr()?,
        queues = ?args.sqs_queue_urls,
        topics = ?args.topic_arns,
        dry_run = args.dry_run,
        "ssm-resync serving"
    );

    let shutdown = shutdown_signal().shared();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let consumers: Vec<_> = queues
        .into_iter()
        .map(|q| tokio::spawn(q.run(stopped.clone())))
        .collect();
    let accepting = admin.accepting.clone();
    let draining = shutdown.clone().map(move |_| {
        accepting.store(false, Ordering::Release);
        let _ = stop.send(true);
        tracing::info!("shutting down: readiness off, finishing in-flight deliveries and messages");
    });
    let opts = crate::http::ServeOptions {
        read_timeout: args.read_timeout,
        max_connections: args.max_connections,
    };
    let metrics = admin.metrics.clone();
    let public_srv = async {
        match (public, webhook) {
            (Some(listener), Some(webhook)) => {
                tracing::info!(
                    max_concurrent_requests = args.max_concurrent_requests(),
                    max_connections = opts.max_connections,
                    read_timeout = ?opts.read_timeout,
                    "connection limits"
                );
                crate::http::serve(
                    listener,
                    crate::http::public_router(webhook),
                    draining,
                    opts,
                    metrics.clone(),
                )
                .await
            }
            _ => {
                draining.await;
                Ok(())
            }
        }
    };
    let admin_srv = crate::http::serve(
        admin_listener,
        crate::http::admin_router(admin),
        shutdown,
        opts,
        metrics.clone(),
    );
    tokio::try_join!(public_srv, admin_srv)?;
    for c in consumers {
        let _ = c.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Sets how ClusterExternalSecrets are triggered: the flag, or with `auto` what ESO's CRD
/// says, read now and every 10 minutes after (ESO may be upgraded under a running service).
async fn ces_trigger(args: &ServeArgs, client: &kube::Client, trigger: &Trigger) {
    use crate::cluster::eso::{self, CesTrigger, CesTriggerFlag};
    let version = args.eso_version.as_str();
    match args.ces_trigger {
        CesTriggerFlag::Annotation => trigger.set_ces_trigger(CesTrigger::ParentAnnotation),
        CesTriggerFlag::Spec => trigger.set_ces_trigger(CesTrigger::SpecAnnotations),
        CesTriggerFlag::Auto => {
            let (t, why) = eso::detect_ces_trigger(client, version).await;
            tracing::info!(ces_trigger = t.as_str(), reason = %why, "ClusterExternalSecret trigger");
            trigger.set_ces_trigger(t);
            let (client, trigger) = (client.clone(), trigger.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    let (t, why) = eso::detect_ces_trigger(&client, version).await;
                    if t != trigger.ces_trigger() {
                        tracing::info!(ces_trigger = t.as_str(), reason = %why, "ClusterExternalSecret trigger changed");
                        trigger.set_ces_trigger(t);
                    }
                }
            });
        }
    }
    if args.ces_trigger != CesTriggerFlag::Auto {
        tracing::info!(
            ces_trigger = trigger.ces_trigger().as_str(),
            "ClusterExternalSecret trigger (--ces-trigger)"
        );
    }
}

/// Whether this replica may sweep: always without a lease; with one, while it holds it.
fn leader_channel(
    args: &ServeArgs,
    client: kube::Client,
) -> Option<tokio::sync::watch::Receiver<bool>> {
    if args.sweep_lease.is_empty() {
        return None;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let name = args.sweep_lease.clone();
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map(|h| format!("{h}-{}", std::process::id()))
        .unwrap_or_else(|_| format!("ssm-resync-{}", std::process::id()));
    let duration = args.lease_duration.as_secs().max(2);
    tokio::spawn(async move {
        loop {
            let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &name)
                .with_namespace(&namespace)
                .with_identity(&identity)
                .with_duration(duration)
                .with_grace((duration / 3).max(1))
                .build()
                .await;
            match manager {
                Ok(m) => {
                    let (mut state, _task) = m.watch().await;
                    loop {
                        let leading = *state.borrow_and_update();
                        tracing::info!(lease = %name, namespace = %namespace, identity = %identity, leading, "sweep lease");
                        if tx.send(leading).is_err() || state.changed().await.is_err() {
                            break;
                        }
                    }
                    let _ = tx.send(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %name, "cannot use the sweep lease; retrying")
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    Some(rx)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// `ssm-resync sample`.
pub fn sample(args: SampleArgs) -> anyhow::Result<()> {
    let topic = args
        .topic_arns
        .first()
        .cloned()
        .unwrap_or_else(|| "arn:aws:sns:us-east-1:123456789012:ssm-resync".into());
    let account = match args.account {
        Some(a) => a,
        None => topic.split(':').nth(4).unwrap_or("123456789012").to_owned(),
    };
    let message = match (&args.message, &args.parameter) {
        (Some(file), _) => read_message(file)?,
        (None, Some(name)) => {
            crate::sample::parameter_store_change(name, &args.operation, &args.region, &account)
                .to_string()
        }
        (None, None) => anyhow::bail!("--parameter or --message is required"),
    };
    if args.event_only {
        println!("{message}");
        return Ok(());
    }
    let key = args
        .sign_key
        .as_deref()
        .map(SigningKey::from_file)
        .transpose()?;
    if key.is_none() {
        eprintln!("warning: no --sign-key: the envelope is unsigned and will be rejected (403)");
    }
    let env = crate::sample::notification(message, &topic, &args.cert_url, key.as_ref());
    println!("{}", serde_json::to_string_pretty(&env)?);
    Ok(())
}

fn read_message(file: &str) -> anyhow::Result<String> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    Ok(text.trim().to_owned())
}

/// `ssm-resync dev-cert`.
pub fn write_dev_cert(args: DevCertArgs) -> anyhow::Result<()> {
    let dc = dev_cert(args.days)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let key = args.out.join("key.pem");
    let cert = args.out.join("cert.pem");
    write_private(&key, &dc.key_pem)?;
    std::fs::write(&cert, dc.cert_pem)?;
    println!("wrote {} and {}", key.display(), cert.display());
    println!(
        "pin it: --sns-signing-cert https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem={}",
        cert.display()
    );
    Ok(())
}

fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// `ssm-resync sns verify`: 0 valid, 1 invalid, 2 usage error (bad file, flag or certificate).
pub async fn verify_file(args: VerifyArgs) -> std::process::ExitCode {
    match verify_file_inner(args).await {
        Ok(Ok(())) => {
            println!("valid");
            std::process::ExitCode::SUCCESS
        }
        Ok(Err(reject)) => {
            println!("invalid: {}", reject.reason());
            eprintln!("{reject}");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn verify_file_inner(args: VerifyArgs) -> anyhow::Result<Result<(), crate::sns::Reject>> {
    let body = if args.file == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file))?
    };
    let now = match &args.at {
        Some(at) => time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .with_context(|| {
                format!("--at {at:?}: expected RFC 3339, e.g. 2022-07-28T21:23:58Z")
            })?,
        None => time::OffsetDateTime::now_utc(),
    };
    let topics = if args.topic_arns.is_empty() {
        eprintln!("note: no --topic-arn given: the topic allow-list check is skipped");
        TopicPolicy::any()
    } else {
        TopicPolicy::new(&args.topic_arns)?
    };
    let env = match Envelope::parse(&body) {
        Ok(env) => env,
        Err(r) => return Ok(Err(r)),
    };
    let mut certs = CertStore::new(CertStoreConfig::default());
    if let Some(cert) = &args.cert {
        let body = std::fs::read(cert).with_context(|| format!("reading --cert {cert}"))?;
        certs = certs.with_fixed_body(body);
    }
    let verifier = Verifier::new(topics, Arc::new(certs)).with_max_age(args.max_message_age);
    Ok(verifier.verify(&env, now).await.map(drop))
}

/// `ssm-resync explain`.
pub async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let text = if args.file == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?
    };
    let changes = crate::explain::changes_from(&text)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster)")?;
    let index = crate::explain::index_from_cluster(
        &client,
        args.eso_version,
        args.kes,
        args.index.config(),
    )
    .await?;
    let result = crate::explain::explain_all(&index, &changes);
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&crate::explain::to_json(&result))?
        ),
        Output::Table => print!("{}", crate::explain::to_table(&changes, &result)),
    }
    Ok(())
}
