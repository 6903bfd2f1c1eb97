//! `ssm-resync sample` and `dev-cert`: the payloads a user curls at the webhook, shaped as AWS
//! sends them, and a certificate to sign them with (pinned with `--sns-signing-cert`).

use anyhow::Context as _;

use crate::config::{DevCertArgs, SampleArgs};
use crate::sns::Envelope;
use crate::sns::sign::{SigningKey, dev_cert, sns_timestamp};

/// The EventBridge "Parameter Store Change" event, as AWS emits it.
pub fn parameter_store_change(
    name: &str,
    operation: &str,
    region: &str,
    account: &str,
) -> serde_json::Value {
    let sep = if name.starts_with('/') { "" } else { "/" };
    serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Parameter Store Change",
        "source": "aws.ssm",
        "account": account,
        "time": time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 ns").format(&time::format_description::well_known::Rfc3339).expect("formats"),
        "region": region,
        "resources": [format!("arn:aws:ssm:{region}:{account}:parameter{sep}{name}")],
        "detail": {"operation": operation, "name": name, "type": "String", "description": ""}
    })
}

/// An SNS Notification envelope around `message`, signed when a key is given.
pub fn notification(
    message: String,
    topic_arn: &str,
    cert_url: &str,
    key: Option<&SigningKey>,
) -> Envelope {
    let mut env = Envelope {
        kind: "Notification".into(),
        message_id: uuid::Uuid::new_v4().to_string(),
        topic_arn: topic_arn.into(),
        subject: None,
        message,
        timestamp: sns_timestamp(time::OffsetDateTime::now_utc()),
        signature_version: "2".into(),
        signature: String::new(),
        signing_cert_url: cert_url.into(),
        subscribe_url: None,
        token: None,
        unsubscribe_url: Some(format!(
            "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic_arn}:00000000-0000-0000-0000-000000000000"
        )),
        message_attributes: None,
    };
    if let Some(k) = key {
        k.sign_envelope(&mut env);
    }
    env
}

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
            parameter_store_change(name, &args.operation, &args.region, &account).to_string()
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
    let env = notification(message, &topic, &args.cert_url, key.as_ref());
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
