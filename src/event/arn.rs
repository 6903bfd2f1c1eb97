//! Secrets Manager ARN helpers, shared by the decoder (ids in CloudTrail events) and the index
//! (keys written as ARNs).

/// A Secrets Manager ARN's name and whether its last 7 characters look like AWS's random
/// `-XXXXXX`: a full ARN ends in it, a partial ARN (which AWS also accepts) does not, and a name
/// may end in `-backup` by itself. Callers that cannot tell take both names.
pub fn secret_arn_names(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('-') {
        Some((base, suffix))
            if suffix.len() == 6
                && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
                && !base.is_empty() =>
        {
            (name, Some(base))
        }
        _ => (name, None),
    }
}
