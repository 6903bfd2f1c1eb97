//! Envelope parsing, the string to sign and the certificate-URL policy on arbitrary bytes:
//! no panic, and whatever parses must re-serialise to something that parses to the same
//! envelope with the same string to sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm_resync::sns::{Envelope, cert::check_cert_url};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data) else { return };
    let sts = env.string_to_sign().expect("a parsed envelope has a known Type");
    let again = Envelope::parse(&serde_json::to_vec(&env).unwrap()).expect("round trip parses");
    assert_eq!(again.string_to_sign().unwrap(), sts);
    if let Ok(region) = check_cert_url(&env.signing_cert_url) {
        assert!(env.signing_cert_url.starts_with(&format!("https://sns.{region}.amazonaws.com")));
        assert!(!env.signing_cert_url.contains(['@', '?', '#', '%', '\\']));
    }
});
