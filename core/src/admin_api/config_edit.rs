//! Reading and editing the running config through the admin API, as TOML documents.
//!
//! Owns: redaction ([`redact`]: every value whose key names a secret — shared secrets,
//! password hashes, private keys, tokens — becomes [`REDACTED`]), putting secrets back into an
//! edited document ([`restore_redacted`]: a value still reading [`REDACTED`] keeps the running
//! value at the same place, so a client may send back what it read), and building a whole new
//! config text from section replacements ([`replace_sections`]). Does not own: validation or
//! applying (the control core does both, exactly as for a SIGHUP reload).

use serde_json::Value as Json;

/// What a secret reads as.
pub const REDACTED: &str = "<redacted>";

/// Whether a key holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("secret")
        || key.contains("password")
        || key.contains("token")
        || key == "key"
        || key.ends_with("_key")
        || key.ends_with("_hmac")
}

/// A copy of `doc` with every secret replaced by [`REDACTED`].
pub fn redact(doc: &toml::Table) -> toml::Table {
    doc.iter().map(|(k, v)| (k.clone(), redact_value(k, v))).collect()
}

fn redact_value(key: &str, value: &toml::Value) -> toml::Value {
    if is_secret_key(key) && !matches!(value, toml::Value::Table(_) | toml::Value::Array(_)) {
        return toml::Value::String(REDACTED.into());
    }
    match value {
        toml::Value::Table(t) => toml::Value::Table(redact(t)),
        toml::Value::Array(items) => toml::Value::Array(items.iter().map(|v| redact_value(key, v)).collect()),
        other => other.clone(),
    }
}

/// Puts the running value back wherever `edited` still reads [`REDACTED`]; the error names
/// a redacted value with no running counterpart (`routes[2].secret`).
pub fn restore_redacted(edited: &mut toml::Table, running: &toml::Table) -> Result<(), Vec<String>> {
    let mut missing = Vec::new();
    restore_table(edited, Some(running), "", &mut missing);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

fn restore_table(edited: &mut toml::Table, running: Option<&toml::Table>, path: &str, missing: &mut Vec<String>) {
    for (key, value) in edited.iter_mut() {
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        restore_value(value, running.and_then(|r| r.get(key)), &here, missing);
    }
}

fn restore_value(value: &mut toml::Value, running: Option<&toml::Value>, path: &str, missing: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if s == REDACTED => match running {
            Some(original) if original.as_str() != Some(REDACTED) => *value = original.clone(),
            _ => missing.push(format!("{path}: reads {REDACTED} but the running config has no value there; give the real value")),
        },
        toml::Value::Table(t) => restore_table(t, running.and_then(|r| r.as_table()), path, missing),
        toml::Value::Array(items) => {
            let originals = running.and_then(|r| r.as_array());
            for (i, item) in items.iter_mut().enumerate() {
                restore_value(item, originals.and_then(|o| o.get(i)), &format!("{path}[{i}]"), missing);
            }
        }
        _ => {}
    }
}

/// The running document with the named top-level sections replaced (`null` removes one), as
/// TOML text. `sections` is a JSON object such as `{"routes": [...], "dns": {...}}`.
pub fn replace_sections(running: &toml::Table, sections: &Json) -> Result<String, Vec<String>> {
    let Some(sections) = sections.as_object() else {
        return Err(vec!["`sections` must be an object of top-level sections, e.g. {\"routes\": [...]}".into()]);
    };
    let mut doc = running.clone();
    let mut problems = Vec::new();
    for (name, value) in sections {
        if value.is_null() {
            doc.remove(name);
            continue;
        }
        match toml::Value::try_from(value) {
            Ok(v) => {
                doc.insert(name.clone(), v);
            }
            Err(e) => problems.push(format!("[{name}]: cannot be written as TOML: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    toml::to_string(&doc).map_err(|e| vec![format!("cannot write the config as TOML: {e}")])
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = r#"
        [radius]
        auth_port = 1812
        [[radius.clients]]
        name = "nas"
        secret = "s3cret"
        [[admin.users]]
        username = "ops"
        password_hash = "$6$x$y"
        [[certificates]]
        name = "site"
        cert = "site.crt"
        key = "site.key"
        [[routes]]
        name = "web"
        match = { ports = 80 }
    "#;

    fn running() -> toml::Table {
        RUNNING.parse().expect("toml")
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let redacted = redact(&running());
        let text = toml::to_string(&redacted).expect("toml");
        assert!(!text.contains("s3cret") && !text.contains("$6$x$y") && !text.contains("site.key"), "{text}");
        assert!(text.contains("site.crt") && text.contains("auth_port = 1812") && text.contains("nas"), "{text}");
        assert!(!is_secret_key("keepalive_timeout") && !is_secret_key("max_request_line"));
    }

    #[test]
    fn redacted_values_sent_back_keep_the_running_secret() {
        let mut edited = redact(&running());
        restore_redacted(&mut edited, &running()).expect("restored");
        assert_eq!(edited, running());
        // A redacted value in a new place has nothing to restore from.
        let mut added: toml::Table = "[[radius.clients]]\nname = \"a\"\nsecret = \"x\"\n[[radius.clients]]\nname = \"b\"\nsecret = \"<redacted>\"\n"
            .parse()
            .expect("toml");
        let problems = restore_redacted(&mut added, &running()).expect_err("nothing to restore");
        assert!(problems[0].starts_with("radius.clients[1].secret"), "{problems:?}");
    }

    #[test]
    fn sections_are_replaced_or_removed() {
        let sections = serde_json::json!({
            "routes": [{ "name": "api", "match": { "ports": 81 } }],
            "radius": null,
        });
        let text = replace_sections(&running(), &sections).expect("text");
        let doc: toml::Table = text.parse().expect("toml");
        assert!(doc.get("radius").is_none());
        assert_eq!(doc["routes"][0]["name"].as_str(), Some("api"));
        assert_eq!(doc["certificates"][0]["name"].as_str(), Some("site"));
        assert!(replace_sections(&running(), &serde_json::json!([1])).is_err());
    }
}
