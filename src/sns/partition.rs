//! AWS partitions as SNS signs in them: where a topic's signing certificate is served, and the
//! name that certificate carries.
//!
//! Sources (the checks they feed are described in docs/reference.md, "Rejection reasons":
//! `cert_url_rejected` and `cert_invalid`):
//! - hosts: the SNS endpoint `sns.<region>.<dnsSuffix>` with each partition's dnsSuffix from
//!   botocore `partitions.json`; AWS's Java SDK v2 (`SnsHostProvider.regionalEndpoint`,
//!   `CertificateUrlValidator`) requires the certificate host to be exactly that endpoint for
//!   the region it was configured with;
//! - names: `SnsHostProvider.signingCertCommonNameInternal` and its test table in
//!   aws/aws-sdk-java-v2 `services-custom/sns-message-manager` (the v1 SDK has had the China
//!   and GovCloud names since 2018). Commercial names are confirmed by real certificates
//!   (2014–2026, all `sns.amazonaws.com`); the others rest on the SDK alone.

/// One partition: its name as it appears in ARNs, the DNS suffix of its endpoints, and the
/// region-name prefixes that place a region in it (botocore `regionRegex`).
#[derive(Debug, PartialEq, Eq)]
pub struct Partition {
    pub name: &'static str,
    pub dns_suffix: &'static str,
    prefixes: &'static [&'static str],
}

/// Every partition SNS runs in; `aws` last, as the fallback for region names no other claims.
pub const PARTITIONS: &[Partition] = &[
    Partition {
        name: "aws-cn",
        dns_suffix: "amazonaws.com.cn",
        prefixes: &["cn-"],
    },
    Partition {
        name: "aws-us-gov",
        dns_suffix: "amazonaws.com",
        prefixes: &["us-gov-"],
    },
    Partition {
        name: "aws-iso",
        dns_suffix: "c2s.ic.gov",
        prefixes: &["us-iso-"],
    },
    Partition {
        name: "aws-iso-b",
        dns_suffix: "sc2s.sgov.gov",
        prefixes: &["us-isob-"],
    },
    Partition {
        name: "aws-iso-e",
        dns_suffix: "cloud.adc-e.uk",
        prefixes: &["eu-isoe-"],
    },
    Partition {
        name: "aws-iso-f",
        dns_suffix: "csp.hci.ic.gov",
        prefixes: &["us-isof-"],
    },
    Partition {
        name: "aws-eusc",
        dns_suffix: "amazonaws.eu",
        prefixes: &["eusc-"],
    },
    Partition {
        name: "aws",
        dns_suffix: "amazonaws.com",
        prefixes: &[],
    },
];

/// The partition a region belongs to.
pub fn of_region(region: &str) -> &'static Partition {
    PARTITIONS
        .iter()
        .find(|p| p.prefixes.iter().any(|pre| region.starts_with(pre)))
        .unwrap_or(&PARTITIONS[PARTITIONS.len() - 1])
}

/// The partition named in an ARN.
pub fn by_name(name: &str) -> Option<&'static Partition> {
    PARTITIONS.iter().find(|p| p.name == name)
}

/// Where a topic's signing certificates are served: `https://sns.<region>.<dnsSuffix>/`, or
/// `None` when the ARN's partition is unknown or does not hold its region (an ARN
/// `arn:aws:sns:cn-north-1:…` names no real topic).
pub fn cert_url_prefix(topic_partition: &str, topic_region: &str) -> Option<String> {
    let p = by_name(topic_partition)?;
    (of_region(topic_region) == p).then(|| format!("https://sns.{topic_region}.{}/", p.dns_suffix))
}

/// The names a signing certificate for `region` may carry (matched against its DNS
/// subject-alternative names, or its subject CN when it has none).
pub fn signing_names(region: &str) -> Vec<String> {
    let p = of_region(region);
    match p.name {
        // Default regions: sns.amazonaws.com (every real certificate 2010–2026); opt-in
        // regions: a regional signing name.
        "aws" => vec![
            "sns.amazonaws.com".into(),
            format!("sns-signing.{region}.amazonaws.com"),
        ],
        // GovCloud: both regions sign with the us-gov-west-1 name.
        "aws-us-gov" => vec!["sns-us-gov-west-1.amazonaws.com".into()],
        // China and the older isolated partitions: `sns-<region>.<suffix>` (a dash, not a dot).
        "aws-cn" | "aws-iso" | "aws-iso-b" => vec![format!("sns-{region}.{}", p.dns_suffix)],
        // The newer isolated partitions and the European sovereign cloud.
        _ => vec![format!("sns-signing.{region}.{}", p.dns_suffix)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_fall_in_their_partitions() {
        for (region, partition) in [
            ("us-east-1", "aws"),
            ("ap-southeast-5", "aws"),
            ("cn-northwest-1", "aws-cn"),
            ("us-gov-east-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eu-isoe-west-1", "aws-iso-e"),
            ("us-isof-south-1", "aws-iso-f"),
            ("eusc-de-east-1", "aws-eusc"),
        ] {
            assert_eq!(of_region(region).name, partition, "{region}");
        }
    }

    #[test]
    fn certificate_host_follows_the_topic() {
        assert_eq!(
            cert_url_prefix("aws", "eu-west-1").unwrap(),
            "https://sns.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            cert_url_prefix("aws-cn", "cn-north-1").unwrap(),
            "https://sns.cn-north-1.amazonaws.com.cn/"
        );
        assert_eq!(
            cert_url_prefix("aws-us-gov", "us-gov-west-1").unwrap(),
            "https://sns.us-gov-west-1.amazonaws.com/"
        );
        // A partition that does not hold the region, or none at all.
        assert_eq!(cert_url_prefix("aws", "cn-north-1"), None);
        assert_eq!(cert_url_prefix("aws-cn", "us-east-1"), None);
        assert_eq!(cert_url_prefix("aws-mars", "us-east-1"), None);
    }

    /// The table of AWS's Java SDK v2 (`SnsHostProviderTest`).
    #[test]
    fn signing_names_are_the_sdks() {
        for (region, want) in [
            ("us-east-1", "sns.amazonaws.com"),
            ("af-south-1", "sns-signing.af-south-1.amazonaws.com"),
            ("cn-north-1", "sns-cn-north-1.amazonaws.com.cn"),
            ("cn-northwest-1", "sns-cn-northwest-1.amazonaws.com.cn"),
            ("us-gov-west-1", "sns-us-gov-west-1.amazonaws.com"),
            ("us-gov-east-1", "sns-us-gov-west-1.amazonaws.com"),
            ("us-iso-east-1", "sns-us-iso-east-1.c2s.ic.gov"),
            ("us-isob-east-1", "sns-us-isob-east-1.sc2s.sgov.gov"),
            (
                "us-isof-south-1",
                "sns-signing.us-isof-south-1.csp.hci.ic.gov",
            ),
            (
                "eu-isoe-west-1",
                "sns-signing.eu-isoe-west-1.cloud.adc-e.uk",
            ),
            ("eusc-de-east-1", "sns-signing.eusc-de-east-1.amazonaws.eu"),
        ] {
            assert!(
                signing_names(region).iter().any(|n| n == want),
                "{region}: {:?}",
                signing_names(region)
            );
        }
        // The commercial name is never accepted outside the commercial partition.
        for region in [
            "cn-north-1",
            "us-gov-west-1",
            "us-iso-east-1",
            "eusc-de-east-1",
        ] {
            assert!(
                !signing_names(region)
                    .iter()
                    .any(|n| n == "sns.amazonaws.com")
            );
        }
    }
}
