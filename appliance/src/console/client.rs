//! The console's admin API client: blocking HTTP(S) with ureq.
//!
//! Owns: logging in (`POST /api/login`, the token kept for later calls, logging in again when a
//! call answers 401 because the token expired), fetching JSON (`/api/stats`, `/api/certs`,
//! `/api/logs`, `/api/queue`) and the queue actions (`POST /api/queue/{id}/retry`,
//! `POST /api/queue/retry`, `DELETE /api/queue/{id}`). Does not own: what is shown (`view`).

use std::time::Duration;

use serde_json::Value;

/// Why a call failed, in words for the status line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the API.
    #[error("{url}: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The API answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// The answer was not JSON.
    #[error("{url}: not JSON: {message}")]
    NotJson {
        /// The URL.
        url: String,
        /// The parser's complaint.
        message: String,
    },
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Delete,
}

/// A logged-in client of one appliance's admin API.
pub struct AdminClient {
    agent: ureq::Agent,
    base: String,
    user: String,
    password: String,
    token: Option<String>,
}

impl AdminClient {
    /// A client for `base` (`http://127.0.0.1:9090`); `insecure` skips certificate checks
    /// (self-signed admin certificates).
    pub fn new(base: &str, user: &str, password: &str, insecure: bool) -> AdminClient {
        let tls = ureq::tls::TlsConfig::builder().disable_verification(insecure).build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        AdminClient {
            agent,
            base: base.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password: password.to_string(),
            token: None,
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Logs in and keeps the token.
    pub fn login(&mut self) -> Result<(), ClientError> {
        let url = format!("{}/api/login", self.base);
        let body = serde_json::json!({"username": self.user, "password": self.password}).to_string();
        let response = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body)
            .map_err(|e| ClientError::Transport { url: url.clone(), message: e.to_string() })?;
        let value = read_json(&url, response)?;
        self.token = value["token"].as_str().map(str::to_string);
        Ok(())
    }

    /// `GET path` as JSON, logging in first (or again, once, on 401).
    pub fn get(&mut self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::Get, path)
    }

    /// `POST path` (no body) as JSON, logging in first (or again, once, on 401).
    pub fn post(&mut self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::Post, path)
    }

    /// `DELETE path` as JSON, logging in first (or again, once, on 401).
    pub fn delete(&mut self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::Delete, path)
    }

    fn call(&mut self, method: Method, path: &str) -> Result<Value, ClientError> {
        if self.token.is_none() {
            self.login()?;
        }
        match self.call_once(method, path) {
            Err(ClientError::Status { status: 401, .. }) => {
                self.login()?;
                self.call_once(method, path)
            }
            other => other,
        }
    }

    fn call_once(&self, method: Method, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let authorization = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        let sent = match method {
            Method::Get => self.agent.get(&url).header("authorization", &authorization).call(),
            Method::Post => self.agent.post(&url).header("authorization", &authorization).send_empty(),
            Method::Delete => self.agent.delete(&url).header("authorization", &authorization).call(),
        };
        let response = sent.map_err(|e| ClientError::Transport { url: url.clone(), message: e.to_string() })?;
        read_json(&url, response)
    }
}

fn read_json(url: &str, mut response: ureq::http::Response<ureq::Body>) -> Result<Value, ClientError> {
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| ClientError::Transport { url: url.to_string(), message: e.to_string() })?;
    if status != 200 {
        let body: String = text.chars().take(200).collect();
        return Err(ClientError::Status { url: url.to_string(), status, body });
    }
    serde_json::from_str(&text).map_err(|e| ClientError::NotJson { url: url.to_string(), message: e.to_string() })
}
