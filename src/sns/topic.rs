//! The topic allow-list. Anyone can subscribe a public endpoint to a topic in their own AWS
//! account and send genuinely AWS-signed messages, so a valid signature alone proves nothing
//! about who sent the change: only listed topics are confirmed or processed.

use regex::RegexSet;

/// Exact topic ARNs, or ARNs with `*` standing for any run of characters inside one ARN
/// segment (it never matches `:`), e.g. `arn:aws:sns:*:123456789012:ssm-changes`. A wildcard
/// is accepted in the region and topic-name segments only: in the account (or partition) it
/// would let anyone with an AWS account create a topic of that name and relay genuinely
/// signed messages.
#[derive(Debug, Clone)]
pub struct TopicPolicy {
    patterns: Vec<String>,
    /// Patterns without `*`, compared as strings (the common case: one exact ARN).
    exact: Vec<String>,
    /// The wildcard patterns.
    set: RegexSet,
}

impl TopicPolicy {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> anyhow::Result<Self> {
        if patterns.is_empty() {
            anyhow::bail!(
                "at least one --topic-arn is required: without an allow-list any AWS account could drive this service"
            );
        }
        let (mut regexes, mut exact) = (Vec::new(), Vec::new());
        for p in patterns {
            let p = p.as_ref().trim();
            let parts: Vec<&str> = p.split(':').collect();
            if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sns" {
                anyhow::bail!(
                    "--topic-arn {p:?}: expected arn:<partition>:sns:<region>:<account>:<topic>"
                );
            }
            if parts.iter().any(|s| s.is_empty()) {
                anyhow::bail!("--topic-arn {p:?}: empty ARN segment");
            }
            for (i, what) in [(1, "partition"), (4, "account")] {
                if parts[i].contains('*') {
                    anyhow::bail!(
                        "--topic-arn {p:?}: `*` in the {what} would admit topics anyone can create in their own AWS account; name the {what} (wildcards are allowed in the region and the topic name only)"
                    );
                }
            }
            if !(parts[4].len() == 12 && parts[4].bytes().all(|b| b.is_ascii_digit())) {
                anyhow::bail!("--topic-arn {p:?}: the account must be 12 digits");
            }
            if !p.contains('*') {
                exact.push(p.to_owned());
                continue;
            }
            let body: Vec<String> = p.split('*').map(regex::escape).collect();
            regexes.push(format!("^{}$", body.join("[^:]*")));
        }
        Ok(Self {
            patterns: patterns
                .iter()
                .map(|p| p.as_ref().trim().to_owned())
                .collect(),
            exact,
            set: RegexSet::new(regexes)?,
        })
    }

    /// Every topic: for `ssm-resync sns verify` without `--topic-arn` (an offline check of one
    /// message, which says the allow-list is skipped). Never for `serve`.
    pub fn any() -> Self {
        Self {
            patterns: vec!["*".into()],
            exact: Vec::new(),
            set: RegexSet::new(["^arn:[^:]+:sns:[^:]+:[^:]+:[^:]+$"]).expect("static regex"),
        }
    }

    pub fn allows(&self, topic_arn: &str) -> bool {
        self.exact.iter().any(|p| p == topic_arn) || self.set.is_match(topic_arn)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard() {
        let p = TopicPolicy::new(&[
            "arn:aws:sns:us-east-1:111111111111:ssm-changes",
            "arn:aws:sns:*:222222222222:ssm-*",
        ])
        .unwrap();
        assert!(p.allows("arn:aws:sns:us-east-1:111111111111:ssm-changes"));
        assert!(!p.allows("arn:aws:sns:us-east-1:111111111111:ssm-changes2"));
        assert!(!p.allows("arn:aws:sns:us-west-2:111111111111:ssm-changes"));
        assert!(p.allows("arn:aws:sns:eu-west-1:222222222222:ssm-prod"));
        // `*` never crosses a segment: it cannot swallow the account.
        assert!(!p.allows("arn:aws:sns:eu-west-1:333333333333:x:222222222222:ssm-prod"));
        assert!(!p.allows("arn:aws:sns:eu-west-1:333333333333:ssm-prod"));
        // Regex metacharacters in the pattern are literal.
        let dot = TopicPolicy::new(&["arn:aws:sns:us-east-1:111111111111:a.b"]).unwrap();
        assert!(!dot.allows("arn:aws:sns:us-east-1:111111111111:aXb"));
    }

    #[test]
    fn wildcards_only_in_region_and_topic_name() {
        assert!(TopicPolicy::new(&["arn:aws:sns:*:111111111111:ssm-*"]).is_ok());
        for bad in [
            "arn:aws:sns:us-east-1:*:ssm-resync",
            "arn:aws:sns:*:*:ssm-resync",
            "arn:aws:sns:us-east-1:1111*:ssm-resync",
            "arn:*:sns:us-east-1:111111111111:ssm-resync",
            "arn:aws:sns:us-east-1:12345:ssm-resync",
        ] {
            let e = TopicPolicy::new(&[bad]).unwrap_err().to_string();
            assert!(
                e.contains("account") || e.contains("partition"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn refuses_empty_and_malformed() {
        assert!(TopicPolicy::new::<&str>(&[]).is_err());
        assert!(TopicPolicy::new(&["*"]).is_err());
        assert!(TopicPolicy::new(&["arn:aws:sqs:us-east-1:1:q"]).is_err());
        assert!(TopicPolicy::new(&["arn:aws:sns:us-east-1::t"]).is_err());
    }
}
