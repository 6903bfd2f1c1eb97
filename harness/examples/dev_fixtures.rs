//! Writes tests/data/sns/dev-signed: one SNS Notification per AWS partition, shaped as SNS would
//! send it there (certificate host and signing name per `ssm_resync::sns::partition`), but
//! signed with a throw-away dev key, NOT by AWS. Run:
//! `cargo run -p ssm-resync-harness --example dev_fixtures`.

use ssm_resync::sns::partition;
use ssm_resync::sns::sign::{SigningKey, cert_named, sns_timestamp};
use time::macros::datetime;

/// A region per partition (and an opt-in commercial region, which signs with its own name),
/// with the signing name AWS's Java SDK v2 expects there (`SnsHostProviderTest`), written out
/// here rather than taken from the code under test.
const REGIONS: &[(&str, &str)] = &[
    ("us-east-1", "sns.amazonaws.com"),
    ("af-south-1", "sns-signing.af-south-1.amazonaws.com"),
    ("cn-north-1", "sns-cn-north-1.amazonaws.com.cn"),
    ("us-gov-east-1", "sns-us-gov-west-1.amazonaws.com"),
    ("us-iso-east-1", "sns-us-iso-east-1.c2s.ic.gov"),
    ("us-isob-east-1", "sns-us-isob-east-1.sc2s.sgov.gov"),
    (
        "eu-isoe-west-1",
        "sns-signing.eu-isoe-west-1.cloud.adc-e.uk",
    ),
    (
        "us-isof-south-1",
        "sns-signing.us-isof-south-1.csp.hci.ic.gov",
    ),
    ("eusc-de-east-1", "sns-signing.eusc-de-east-1.amazonaws.eu"),
];

fn main() -> anyhow::Result<()> {
    let dir = format!("{}/tests/data/sns/dev-signed", ssm_resync_harness::REPO);
    std::fs::create_dir_all(&dir)?;
    let sent = datetime!(2026-12-01 00:00:00 UTC);
    for (i, &(region, name)) in REGIONS.iter().enumerate() {
        let p = partition::of_region(region);
        let name = name.to_owned();
        let cert = cert_named(
            Some(rcgen::DnValue::Utf8String(name.clone())),
            &[&name],
            datetime!(2026-01-01 00:00:00 UTC),
            datetime!(2036-01-01 00:00:00 UTC),
        )?;
        let key = SigningKey::from_pem(&cert.key_pem)?;
        let account = "123456789012";
        let topic = format!("arn:{}:sns:{region}:{account}:ssm-resync", p.name);
        let cert_url = format!(
            "https://sns.{region}.{}/SimpleNotificationService-{:032x}.pem",
            p.dns_suffix,
            0xde0 + i
        );
        let event = serde_json::json!({
            "version": "0",
            "id": format!("00000000-0000-4000-8000-{:012}", i),
            "detail-type": "Parameter Store Change",
            "source": "aws.ssm",
            "account": account,
            "time": "2026-12-01T00:00:00Z",
            "region": region,
            "resources": [format!("arn:{}:ssm:{region}:{account}:parameter/dev-signed/{region}", p.name)],
            "detail": {"operation": "Update", "name": format!("/dev-signed/{region}"), "type": "String", "description": ""}
        });
        let mut env = ssm_resync::sample::notification(event.to_string(), &topic, &cert_url, None);
        env.message_id = format!("00000000-0000-4000-8000-{:012}", 100 + i);
        env.timestamp = sns_timestamp(sent);
        env.unsubscribe_url = Some(format!(
            "https://sns.{region}.{}/?Action=Unsubscribe&SubscriptionArn={topic}:00000000-0000-0000-0000-000000000000",
            p.dns_suffix
        ));
        key.sign_envelope(&mut env);
        std::fs::write(
            format!("{dir}/{region}.json"),
            serde_json::to_string_pretty(&env)? + "\n",
        )?;
        std::fs::write(format!("{dir}/{region}.pem"), &cert.cert_pem)?;
        println!("{region}: {} {name} {cert_url}", p.name);
    }
    Ok(())
}
