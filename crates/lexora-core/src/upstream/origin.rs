//! Where a plain or TLS HTTP backend is: its URL split once into the
//! parts every request needs.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

/// An HTTP backend's URL split once into the parts of every request's URI.
pub(super) struct Origin {
    pub(super) scheme: Scheme,
    pub(super) authority: Authority,
    /// The URL's path, put before each request's path.
    pub(super) prefix: String,
    /// The `Host` header hyper's client would otherwise format anew for
    /// every request. Plain HTTP only: hyper adds `Host` to HTTP/1 requests
    /// and not to HTTP/2 ones, and over TLS the protocol is negotiated.
    pub(super) host: Option<HeaderValue>,
}

impl Origin {
    pub(super) fn parse(base: &str) -> Option<Self> {
        let uri = Uri::try_from(base).ok()?;
        let scheme = uri.scheme()?.clone();
        let authority = uri.authority()?.clone();
        let prefix = base
            .split_once("://")?
            .1
            .strip_prefix(authority.as_str())?
            .to_owned();
        let host = if scheme == Scheme::HTTP {
            // As hyper writes it: the host, and the port unless it is 80.
            let value = match uri.port() {
                Some(port) if port.as_u16() != 80 => format!("{}:{}", authority.host(), port),
                _ => authority.host().to_owned(),
            };
            Some(HeaderValue::try_from(value).ok()?)
        } else {
            None
        };
        Some(Self {
            scheme,
            authority,
            prefix,
            host,
        })
    }

    /// The URI of `path` at this origin, the same as parsing the base URL
    /// and `path` written together, without parsing the base again.
    pub(super) fn uri(&self, path: &str) -> Result<Uri, http::Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(self.path(path)?);
        Ok(Uri::from_parts(parts)?)
    }

    /// `path` under this origin's prefix (the request target in origin-form).
    fn path(&self, path: &str) -> Result<PathAndQuery, http::Error> {
        let mut text = String::with_capacity(self.prefix.len() + path.len());
        text.push_str(&self.prefix);
        text.push_str(path);
        Ok(PathAndQuery::try_from(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_builds_the_uri_parsing_base_and_path_would() {
        let cases = [
            ("http://127.0.0.1:8000", Some("127.0.0.1:8000")),
            ("http://engine", Some("engine")),
            ("http://engine:80/prefix", Some("engine")),
            ("http://[::1]:9000/a/b", Some("[::1]:9000")),
            ("http://user:secret@engine:81", Some("engine:81")),
            ("https://api.example.com/v2", None),
        ];
        for (base, host) in cases {
            let origin = Origin::parse(base).expect(base);
            for path in ["/v1/chat/completions", "/v1/models?x=1"] {
                let expected = Uri::try_from(format!("{base}{path}")).expect("valid");
                assert_eq!(origin.uri(path).expect("valid"), expected, "{base}{path}");
            }
            let host = host.map(HeaderValue::from_static);
            assert_eq!(origin.host, host, "{base}");
        }
        assert!(Origin::parse("not a url").is_none());
    }
}
