//! `x-request-id`: kept when the client sends a sane one, generated otherwise; put on the
//! request (for the request span) and echoed on the response.
//!
//! Sane means 1 to 64 characters of `[A-Za-z0-9._-]`: enough for a UUID, a ULID or a trace id,
//! and nothing a log line, a terminal or a log query could read as structure (no quotes, spaces,
//! `=`, `%` or escape sequences).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; longer ones are replaced.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Whether a client's id is kept: 1 to [`MAX_CLIENT_ID_LEN`] characters of `[A-Za-z0-9._-]`.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_CLIENT_ID_LEN).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub async fn request_id(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = match request.headers().get(&REQUEST_ID) {
        Some(value) if acceptable(value) => value.clone(),
        _ => {
            // A UUID is always a valid header value; the fallback is never used.
            let generated = uuid::Uuid::new_v4().to_string();
            HeaderValue::from_str(&generated).unwrap_or(HeaderValue::from_static("invalid"))
        }
    };
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let mut response = next.call(request).await?;
    response.headers_mut().insert(REQUEST_ID, id);
    Ok(response)
}

/// The request span: method, route, status, latency (from tracing-actix-web) and our request id.
/// The query string is left out: it is the one part of a URL that may carry secrets.
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!(
            "http_request",
            http.method = %request.method(),
            http.route = request.match_pattern().unwrap_or_default(),
            http.path = request.path(),
            request_id = %request_id,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span.clone(), outcome);
        // One line per request, carrying the span's fields (route, status, request id).
        span.in_scope(|| tracing::info!("request completed"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(id: &[u8]) -> bool {
        HeaderValue::from_bytes(id).is_ok_and(|value| acceptable(&value))
    }

    #[test]
    fn ids_of_1_to_64_safe_characters_are_kept() {
        for id in [
            "a",
            "req-42.abc",
            "0af7651916cd43dd8448eb211c80319c",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "A_b-C.d",
        ] {
            assert!(kept(id.as_bytes()), "{id}");
        }
        assert!(kept("x".repeat(64).as_bytes()));
    }

    #[test]
    fn empty_long_or_odd_ids_are_replaced() {
        assert!(!kept(b""));
        assert!(!kept("x".repeat(65).as_bytes()));
        for odd in [
            "a b",
            "a\tb",
            "a\"b",
            "a'b",
            "a=b",
            "a%0Ab",
            "a;b",
            "a/b",
            "a:b",
            "a,b",
            "a{b}",
            "a\\b",
            "a\u{7f}b",
            "é",
            "a\u{1b}[31mb",
        ] {
            assert!(!kept(odd.as_bytes()), "{odd:?}");
        }
        // Obsolete header bytes above 0x7f (not UTF-8).
        assert!(!kept(&[b'a', 0xff]));
    }
}
