//! Plain HTTP for our tools and tests (a GET, or any method with a body): every status is an
//! answer, not an error.

use std::time::Duration;

use crate::{ProvisionError, Result};

/// What a server answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find_map(|(key, value)| (*key == name).then_some(value.as_str()))
    }

    /// The body as JSON; `Null` when it is not JSON (an assertion on it then shows the reply).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// `GET url` with `headers`, within `timeout`; an error only when nothing answered.
pub fn get(url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Reply> {
    send("GET", url, headers, None, timeout)
}

/// `method url` with `headers` and `body` (if any), within `timeout`; an error only when nothing
/// answered.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    timeout: Duration,
) -> Result<Reply> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let failed =
        |error: &dyn std::fmt::Display| ProvisionError::Failed(format!("{method} {url}: {error}"));
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    // A GET has no body at all, not an empty one.
    let response = match body {
        Some(body) => request
            .body(body.to_owned())
            .map(|request| agent.run(request)),
        None => request.body(()).map(|request| agent.run(request)),
    };
    let mut response = response
        .map_err(|error| failed(&error))?
        .map_err(|error| failed(&error))?;
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or_default();
            (name.as_str().to_owned(), value.to_owned())
        })
        .collect();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|error| failed(&error))?;
    Ok(Reply {
        status: response.status().as_u16(),
        headers,
        body,
    })
}

/// [`get`] from async code: the blocking call runs on the runtime's blocking threads.
pub async fn get_async(url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Reply> {
    let url = url.to_owned();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        get(&url, &headers, timeout)
    })
    .await
    .map_err(|error| ProvisionError::Failed(format!("GET panicked: {error}")))?
}
