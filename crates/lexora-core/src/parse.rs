//! Parse: read only the fields a policy needs, keep the raw body.
//!
//! The body the client sent is forwarded byte for byte unless something must
//! change: a Lexora extension field (`x_priority`, `x_user_id`, `x_timeout`)
//! is removed, a missing `model` is filled from `default_model`, or a stream
//! must ask the engine for usage. Only then is the top-level object rebuilt,
//! and even then every other member keeps its original text
//! ([`serde_json::value::RawValue`]), so fields Lexora does not know reach
//! the engine unchanged in meaning.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use indexmap::IndexMap;
use serde::de::DeserializeSeed;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::GatewayError;

mod members;
#[cfg(test)]
mod tests;

use members::Members;

/// The OpenAI endpoints Lexora proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
    /// Anthropic's Messages API.
    Messages,
    /// Anthropic's token counting for a Messages request.
    CountTokens,
}

impl Endpoint {
    /// How many endpoints there are (the length of per-endpoint arrays).
    pub const COUNT: usize = 5;

    /// This endpoint's place in per-endpoint arrays, below [`Self::COUNT`].
    pub fn index(self) -> usize {
        match self {
            Self::ChatCompletions => 0,
            Self::Completions => 1,
            Self::Embeddings => 2,
            Self::Messages => 3,
            Self::CountTokens => 4,
        }
    }

    /// Every endpoint, in [`Self::index`] order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Messages,
        Self::CountTokens,
    ];

    /// The endpoint served at `path`, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|endpoint| endpoint.path() == path)
    }

    /// The path on the engine (and on Lexora).
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
        }
    }

    fn streams(self) -> bool {
        !matches!(self, Self::Embeddings | Self::CountTokens)
    }
}

/// A request's place in the queue (seed 001's `x_priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    Normal,
    /// Served when nothing more urgent waits (aging prevents starvation).
    Low,
}

impl Priority {
    /// Parses `high`, `normal` or `low`, in any case.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "high" => Some(Self::High),
            "normal" => Some(Self::Normal),
            "low" => Some(Self::Low),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// Lexora's request extensions, from the body or `x-lexora-*` headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extensions {
    pub priority: Option<Priority>,
    pub user_id: Option<String>,
    pub timeout: Option<Duration>,
}

/// What the rest of the request path needs to know about a request.
#[derive(Debug)]
pub struct ParsedRequest {
    pub endpoint: Endpoint,
    /// The model asked for, or `default_model` when the body named none.
    pub model: Option<String>,
    pub stream: bool,
    /// The client asked for `stream_options.include_usage` itself, so the
    /// usage chunk must reach it.
    pub client_wants_usage: bool,
    /// OpenAI's `user` field.
    pub user: Option<String>,
    /// `max_tokens` (or `max_completion_tokens`) when it is a plain count.
    pub max_tokens: Option<u64>,
    pub extensions: Extensions,
    /// The body to send upstream.
    pub body: Bytes,
}

#[derive(Deserialize, Default)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    // Read leniently: a value Lexora cannot use is the engine's to judge.
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    // Extension fields are captured raw so that even `"x_priority": null`
    // counts as present and is stripped.
    #[serde(borrow, default, deserialize_with = "present")]
    x_priority: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    x_user_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    x_timeout: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Reads an extension field's value; `null` means absent.
fn field<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    name: &'static str,
    expected: &str,
) -> Result<Option<T>, GatewayError> {
    let Some(raw) = raw else { return Ok(None) };
    serde_json::from_str::<Option<T>>(raw.get()).map_err(|_| GatewayError::InvalidRequest {
        message: format!("`{name}` must be {expected}"),
        param: Some(name),
    })
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The extension headers, as names: looked up by a `&str`, every request
/// would parse and validate each name again.
const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-lexora-priority");
const USER_HEADER: HeaderName = HeaderName::from_static("x-lexora-user");
const TIMEOUT_HEADER: HeaderName = HeaderName::from_static("x-lexora-timeout");

const EXTENSION_FIELDS: [&str; 3] = ["x_priority", "x_user_id", "x_timeout"];
const MAX_USER_ID_LEN: usize = 256;
/// Longest `model` and `user` accepted (model ids with an organisation and
/// a quantisation tag stay well below it).
const MAX_NAME_LEN: usize = 256;
/// A day: longer than any generation, short enough for deadline arithmetic.
const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// Reads a request body and the extension headers.
pub fn parse(
    endpoint: Endpoint,
    body: Bytes,
    headers: &HeaderMap,
    default_model: Option<&str>,
) -> Result<ParsedRequest, GatewayError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        let message = if first.is_none() {
            "request body is empty; expected a JSON object".to_owned()
        } else {
            // Tell a JSON array or scalar apart from text that is not JSON.
            match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                Ok(_) => "request body must be a JSON object".to_owned(),
                Err(e) => format!("request body is not valid JSON: {e}"),
            }
        };
        return Err(GatewayError::InvalidJson { message });
    }
    // A stream request is rewritten (to ask for usage): one pass splits its
    // members, the fields Lexora reads come from them, and the rewrite
    // reuses them instead of reading the body again. Other requests are
    // cheaper to read with the derived reader alone, which skips members.
    let members = mentions_stream(&body)
        .then(|| Members::parse(&body).ok().filter(|m| !m.has_repeats()))
        .flatten();
    let peek = match members.as_ref().and_then(peek_members) {
        Some(peek) => peek,
        None => peek_derived(&body)?,
    };

    // Both name what the gateway counts requests by (stats, metrics, rate
    // limits, the access log): unbounded, one client could fill memory.
    for (name, value) in [("model", &peek.model), ("user", &peek.user)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_NAME_LEN) {
            return Err(GatewayError::InvalidRequest {
                message: format!("`{name}` must be at most {MAX_NAME_LEN} bytes long"),
                param: Some(name),
            });
        }
    }
    let extensions = extensions(&peek, headers)?;
    let stream = peek.stream.unwrap_or(false) && endpoint.streams();
    let client_wants_usage = peek
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let fill_model = peek.model.is_none() && default_model.is_some();
    // Anthropic streams always carry usage; only OpenAI's must be asked.
    let add_usage = stream && !client_wants_usage && endpoint != Endpoint::Messages;
    let has_extension =
        peek.x_priority.is_some() || peek.x_user_id.is_some() || peek.x_timeout.is_some();
    let model = peek
        .model
        .as_deref()
        .map(str::to_owned)
        .or_else(|| default_model.map(str::to_owned));
    let user = peek.user.as_deref().map(str::to_owned);
    let max_tokens = peek
        .max_tokens
        .or(peek.max_completion_tokens)
        .and_then(|raw| raw.get().parse::<u64>().ok());

    let body = if has_extension || fill_model || add_usage {
        let fill_model = model.as_deref().filter(|_| fill_model);
        match members {
            Some(members) => rewrite(members, &body, fill_model, add_usage)?,
            None => rewrite_indexed(&body, fill_model, add_usage)?,
        }
    } else {
        body
    };
    Ok(ParsedRequest {
        endpoint,
        model,
        stream,
        client_wants_usage,
        user,
        max_tokens,
        extensions,
        body,
    })
}

/// Whether `body` contains `"stream"` (a key written with escapes is
/// missed, and that body is only read the slower way).
fn mentions_stream(body: &[u8]) -> bool {
    static STREAM: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"stream\""));
    STREAM.find(body).is_some()
}

/// [`Peek`] read by its derived deserializer: the reference for what is
/// accepted, and the source of every error message.
fn peek_derived(body: &[u8]) -> Result<Peek<'_>, GatewayError> {
    // The derived reader skips the members Lexora does not read without
    // checking their strings' UTF-8, and stops at the object's end: a body
    // it passes goes to the engine as it is, so both are checked here (as
    // the member split does by itself).
    if let Err(e) = std::str::from_utf8(body) {
        return Err(GatewayError::InvalidJson {
            message: format!(
                "request body is not valid JSON: invalid UTF-8 at byte {}",
                e.valid_up_to()
            ),
        });
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    match Peek::deserialize(&mut reader).and_then(|peek| reader.end().map(|()| peek)) {
        Ok(peek) => Ok(peek),
        // Tracking the path to the field at fault slows every request
        // down; only an error message needs it, so the body is read again.
        Err(_) => {
            let mut reader = serde_json::Deserializer::from_slice(body);
            let peek = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
                let field = e.path().to_string();
                classify_json_error(e.inner(), Some(&field))
            })?;
            reader.end().map_err(|e| classify_json_error(&e, None))?;
            Ok(peek)
        }
    }
}

/// [`Peek`] from members already split out; `None` where a value is not of
/// the type Lexora reads, so that [`peek_derived`] words the error.
fn peek_members<'a>(members: &Members<'a>) -> Option<Peek<'a>> {
    let mut peek = Peek::default();
    for (key, raw) in members.iter() {
        match key {
            "model" => peek.model = text(raw)?,
            "stream" => peek.stream = serde_json::from_str(raw.get()).ok()?,
            "stream_options" => peek.stream_options = serde_json::from_str(raw.get()).ok()?,
            "user" => peek.user = text(raw)?,
            // As `Option<&RawValue>` reads them: `null` is absent.
            "max_tokens" => peek.max_tokens = Some(raw).filter(|r| r.get() != "null"),
            "max_completion_tokens" => {
                peek.max_completion_tokens = Some(raw).filter(|r| r.get() != "null")
            }
            "x_priority" => peek.x_priority = Some(raw),
            "x_user_id" => peek.x_user_id = Some(raw),
            "x_timeout" => peek.x_timeout = Some(raw),
            _ => {}
        }
    }
    Some(peek)
}

/// An optional string member, borrowed when it has no escapes; `None`
/// when it is not a string or `null`.
fn text(raw: &RawValue) -> Option<Option<Cow<'_, str>>> {
    if raw.get() == "null" {
        return Some(None);
    }
    let mut reader = serde_json::Deserializer::from_str(raw.get());
    let text = members::Text.deserialize(&mut reader).ok()?;
    reader.end().ok()?;
    Some(Some(text))
}

fn classify_json_error(e: &serde_json::Error, field: Option<&str>) -> GatewayError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let field = field.filter(|f| *f != ".");
            let param = ["model", "stream", "stream_options", "user"]
                .into_iter()
                .find(|known| {
                    field.is_some_and(|f| f == *known || f.starts_with(&format!("{known}.")))
                });
            let message = match field {
                Some(field) => format!("invalid value for `{field}`: {e}"),
                None => format!("invalid request: {e}"),
            };
            GatewayError::InvalidRequest { message, param }
        }
        _ => GatewayError::InvalidJson {
            message: format!("request body is not valid JSON: {e}"),
        },
    }
}

fn extensions(peek: &Peek<'_>, headers: &HeaderMap) -> Result<Extensions, GatewayError> {
    let header = |name: &HeaderName| -> Result<Option<&str>, GatewayError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map_err(|_| GatewayError::InvalidRequest {
                    message: format!("header `{name}` is not valid text"),
                    param: None,
                })
            })
            .transpose()
    };

    let body_priority: Option<Cow<'_, str>> = field(peek.x_priority, "x_priority", "a string")?;
    let priority = match body_priority
        .as_deref()
        .map(Ok)
        .or_else(|| header(&PRIORITY_HEADER).transpose())
    {
        None => None,
        Some(text) => Some(Priority::parse(text?).ok_or(GatewayError::InvalidRequest {
            message: "`x_priority` must be one of high, normal, low".into(),
            param: Some("x_priority"),
        })?),
    };

    let body_user: Option<Cow<'_, str>> = field(peek.x_user_id, "x_user_id", "a string")?;
    let user_id = match body_user
        .as_deref()
        .map(Ok)
        .or_else(|| header(&USER_HEADER).transpose())
    {
        None => None,
        Some(text) => {
            let text = text?.trim();
            if text.is_empty() || text.len() > MAX_USER_ID_LEN || text.chars().any(char::is_control)
            {
                return Err(GatewayError::InvalidRequest {
                    message: format!(
                        "`x_user_id` must be 1 to {MAX_USER_ID_LEN} printable characters"
                    ),
                    param: Some("x_user_id"),
                });
            }
            Some(text.to_owned())
        }
    };

    let seconds =
        match field::<f64>(peek.x_timeout, "x_timeout", "a number of seconds")? {
            Some(seconds) => Some(seconds),
            None => {
                match header(&TIMEOUT_HEADER)? {
                    None => None,
                    Some(text) => Some(text.trim().parse::<f64>().map_err(|_| {
                        GatewayError::InvalidRequest {
                            message: "`x-lexora-timeout` must be a number of seconds".into(),
                            param: Some("x_timeout"),
                        }
                    })?),
                }
            }
        };
    let timeout = match seconds {
        None => None,
        Some(s) => Some(
            Some(s)
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= MAX_TIMEOUT_SECONDS)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or(GatewayError::InvalidRequest {
                    message: format!(
                        "`x_timeout` must be a positive number of seconds up to {MAX_TIMEOUT_SECONDS}, got {s}"
                    ),
                    param: Some("x_timeout"),
                })?,
        ),
    };

    Ok(Extensions {
        priority,
        user_id,
        timeout,
    })
}

/// Rebuilds the top-level object: extension fields removed, `model` filled
/// in, `stream_options.include_usage` set. Other members keep their text.
///
/// `object` holds `body`'s members, none repeated.
fn rewrite(
    object: Members<'_>,
    body: &[u8],
    fill_model: Option<&str>,
    add_usage: bool,
) -> Result<Bytes, GatewayError> {
    let model_json;
    let options_json;
    // Shortened to this call, so it can hold the values made below.
    let mut object = object;
    for field in EXTENSION_FIELDS {
        object.remove(field);
    }
    if let Some(model) = fill_model {
        model_json = serde_json::value::to_raw_value(model).map_err(internal)?;
        object.set("model", &model_json);
    }
    if add_usage {
        let mut options = match object.get("stream_options") {
            Some(raw) if raw.get() != "null" => match Members::parse(raw.get().as_bytes()) {
                Ok(options) if options.has_repeats() => {
                    return rewrite_indexed(body, fill_model, add_usage)
                }
                Ok(options) => options,
                Err(_) => return Err(stream_options_not_object()),
            },
            _ => Members::default(),
        };
        let yes: &RawValue = serde_json::from_str("true").map_err(internal)?;
        options.set("include_usage", yes);
        let text = String::from_utf8(options.to_json().map_err(internal)?).map_err(|e| {
            GatewayError::Internal {
                message: format!("rebuilding the request body: {e}"),
            }
        })?;
        options_json = RawValue::from_string(text).map_err(internal)?;
        object.set("stream_options", &options_json);
    }
    object.to_json().map(Bytes::from).map_err(internal)
}

fn stream_options_not_object() -> GatewayError {
    GatewayError::InvalidRequest {
        message: "`stream_options` must be an object".into(),
        param: Some("stream_options"),
    }
}

/// [`rewrite`] through a map: for objects with a repeated key, whose later
/// value wins in the first one's place.
fn rewrite_indexed(
    body: &[u8],
    fill_model: Option<&str>,
    add_usage: bool,
) -> Result<Bytes, GatewayError> {
    let mut object: IndexMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(body).map_err(|e| classify_json_error(&e, None))?;
    for field in EXTENSION_FIELDS {
        object.shift_remove(field);
    }
    let model_json;
    if let Some(model) = fill_model {
        model_json = serde_json::value::to_raw_value(model).map_err(internal)?;
        object.insert(Cow::Borrowed("model"), &model_json);
    }
    let options_json;
    if add_usage {
        let mut options: IndexMap<Cow<'_, str>, &RawValue> = match object.get("stream_options") {
            Some(raw) if raw.get() != "null" => {
                serde_json::from_str(raw.get()).map_err(|_| stream_options_not_object())?
            }
            _ => IndexMap::new(),
        };
        let yes: &RawValue = serde_json::from_str("true").map_err(internal)?;
        options.insert(Cow::Borrowed("include_usage"), yes);
        options_json = serde_json::value::to_raw_value(&options).map_err(internal)?;
        object.insert(Cow::Borrowed("stream_options"), &options_json);
    }
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(internal)
}

/// The body with its `model` replaced (for a fallback model).
pub fn replace_model(body: &[u8], model: &str) -> Result<Bytes, GatewayError> {
    let mut object: IndexMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(body).map_err(|e| classify_json_error(&e, None))?;
    let model_json = serde_json::value::to_raw_value(model).map_err(internal)?;
    object.insert(Cow::Borrowed("model"), &model_json);
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(internal)
}

fn internal(e: serde_json::Error) -> GatewayError {
    GatewayError::Internal {
        message: format!("rebuilding the request body: {e}"),
    }
}
