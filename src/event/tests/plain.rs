use serde_json::json;

use crate::event::{Decoded, Operation, decode};

#[test]
fn plain_format() {
    let m = json!({"parameters": ["/app/db/password", "plain"], "region": "eu-west-1", "account": "111122223333"});
    let Decoded::Changes(c) = decode(&m.to_string()).unwrap() else {
        panic!()
    };
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].name, "plain");
    assert_eq!(c[1].region, "eu-west-1");
    assert_eq!(c[0].account.as_deref(), Some("111122223333"));
    assert_eq!(c[0].operation, Operation::Update);

    let no_account = json!({"parameters": ["/a"], "region": "eu-west-1"});
    let Decoded::Changes(c) = decode(&no_account.to_string()).unwrap() else {
        panic!()
    };
    assert_eq!(c[0].account, None);
}

#[test]
fn plain_format_errors_say_what_was_expected() {
    for (m, want) in [
        (json!({"parameters": [], "region": "eu-west-1"}), "1 to 100"),
        (json!({"parameters": "/a", "region": "eu-west-1"}), "array"),
        (json!({"parameters": ["/a"]}), "region"),
        (json!({"parameters": [1], "region": "eu-west-1"}), "strings"),
        (
            json!({"parameters": ["/a"], "region": "eu-west-1", "account": "12"}),
            "12 digits",
        ),
        (
            json!({"parameters": vec!["/a"; 101], "region": "eu-west-1"}),
            "1 to 100",
        ),
    ] {
        let err = decode(&m.to_string()).unwrap_err();
        assert!(err.0.contains(want), "{m}: {err}");
    }
}
