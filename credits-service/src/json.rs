//! Extractors that answer in the service's one error format: [`ApiJson`] (the body),
//! [`ApiPath`] (path parameters) and [`ApiQuery`] (the query string).

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body, which must be a JSON object. Malformed JSON, another JSON value
/// (an array, a number, …), a wrong type, a negative amount or an unknown field is a 400; a
/// body over the configured limit a 413; a missing JSON content type a 415.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(e.status(), e.body_text()))?;
        // serde reads a struct from a JSON array too (`[5]` as `{"amount":5}`).
        require_object(&bytes)?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(reject(&rejection)),
        }
    }
}

/// 400 `invalid_request` when `body` starts as a JSON value other than an object (an
/// array, a string, a number, `true`, `false`, `null`). Anything else is left to the
/// parser: an object, and text that is no JSON at all (`bad_json`).
pub(crate) fn require_object(body: &[u8]) -> Result<(), ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => Err(ApiError::bad_request(
            "invalid_request",
            "the request body must be a JSON object",
        )),
        _ => Ok(()),
    }
}

/// The answer to a body that could not be read: 413 `body_too_large` over the limit, 400
/// `bad_body` otherwise.
pub(crate) fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large()
    } else {
        ApiError::bad_request("bad_body", text)
    }
}

/// 413 `body_too_large`.
pub(crate) fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the request body exceeds the configured limit",
    )
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5
                && subtype
                    .get(subtype.len() - 5..)
                    .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

fn reject(rejection: &JsonRejection) -> ApiError {
    let text = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => ApiError::bad_request("invalid_request", text),
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("bad_json", text),
        _ => body_error(rejection.status(), text),
    }
}

/// Path parameters; a parameter that does not decode (e.g. `%FF`, not UTF-8) is a 400
/// `invalid_path` in the error format.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rejection) if rejection.status().is_server_error() => {
                Err(ApiError::internal(rejection.body_text()))
            }
            Err(rejection) => Err(ApiError::bad_request("invalid_path", rejection.body_text())),
        }
    }
}

/// The query string; one that does not parse is a 400 `invalid_query` in the error format.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn json_content_types() {
        let cases = [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/problem+json", true),
            ("application/+json", false),
            ("text/json", false),
            ("application/jsonx", false),
            ("text/plain", false),
        ];
        for (value, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(json_content_type(&h), want, "{value}");
        }
        assert!(!json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn only_objects_are_bodies() {
        for (body, ok) in [
            (&b"{}"[..], true),
            (b" \n{\"a\":1}", true),
            (b"[5]", false),
            (b"5", false),
            (b"\"x\"", false),
            (b"null", false),
            // Not JSON at all: the parser's `bad_json`.
            (b"", true),
            (b"x", true),
        ] {
            assert_eq!(require_object(body).is_ok(), ok, "{body:?}");
        }
    }
}
