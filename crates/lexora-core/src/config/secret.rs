//! A string that never shows itself in logs, errors or `config check`.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A credential. `Debug`, `Display` and `Serialize` print a mask.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn mask(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            "***"
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mask())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mask())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.mask())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Reads a string. Anything else is refused without echoing it: serde's
/// own message would print an unquoted key such as `12345678` in full.
struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: de::Error>(kind: &str) -> Result<Secret, E> {
        Err(E::custom(format!(
            "expected a string, got {kind} (a key that YAML reads as a number must be quoted)"
        )))
    }
}

impl de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Self::refuse("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Self::refuse("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Self::refuse("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Self::refuse("a number")
    }
}

/// `url` with any user name and password taken out, for logs, errors,
/// `/health` and `config check`. Text that is not a URL is returned as it
/// is, less anything up to an `@` in what would be its authority.
pub fn without_userinfo(url: &str) -> std::borrow::Cow<'_, str> {
    let start = url.find("://").map_or(0, |at| at + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |at| start + at);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..start], &url[start + at + 1..]).into(),
        None => url.into(),
    }
}

/// Serializes a URL as [`without_userinfo`] prints it.
pub(super) fn serialize_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&without_userinfo(url))
}

/// [`serialize_url`] for an optional URL.
pub(super) fn serialize_optional_url<S: Serializer>(
    url: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serialize_url(url, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_nothing_else() {
        for (url, shown) in [
            (
                "http://user:pw@host:8000/v1?x=a@b",
                "http://host:8000/v1?x=a@b",
            ),
            ("https://token@api.example.com", "https://api.example.com"),
            ("http://a@b@host/", "http://host/"),
            ("http://localhost:8000", "http://localhost:8000"),
            ("ftp://u:p@h", "ftp://h"),
            ("u:p@h/x", "h/x"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(without_userinfo(url), shown, "{url}");
        }
    }

    #[test]
    fn a_key_that_is_not_a_string_is_refused_without_showing_it() {
        let err = serde_yaml_ng::from_str::<Secret>("12345678").expect_err("a number");
        let text = err.to_string();
        assert!(!text.contains("12345678"), "{text}");
        assert!(text.contains("quoted"), "{text}");
        let key: Secret = serde_yaml_ng::from_str("'12345678'").expect("quoted");
        assert_eq!(key.expose(), "12345678");
    }
}
