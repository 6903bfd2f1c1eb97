//! Small text helpers with no dependencies, shared by every layer.

/// The first `max` characters of `s` (whole characters, never a cut UTF-8 sequence): for
/// quoting untrusted input in errors and logs without letting its length through.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(super::truncate("héllo", 2), "hé");
        assert_eq!(super::truncate("abc", 3), "abc");
        assert_eq!(super::truncate("abc", 10), "abc");
        assert_eq!(super::truncate("", 0), "");
    }
}
