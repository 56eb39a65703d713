//! `x-request-id`: kept when the client sends a sane one, generated otherwise; put on the
//! request (for the request span) and echoed on the response.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept; longer or odd ones are replaced, so logs stay tidy.
const MAX_CLIENT_ID_LEN: usize = 128;

fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_CLIENT_ID_LEN
        && bytes.iter().all(|b| b.is_ascii_graphic())
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
