//! A small HTTPS client for the controller API: trusts only the Umbra CA,
//! optionally presents a device certificate, and turns error envelopes into
//! `ApiError`s so the CLI can print the code and message.

use anyhow::{Context, Result, anyhow};
use reqwest::Method;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use umbra_proto::ErrorBody;

#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

pub fn read_ca(path: &std::path::Path) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading CA certificate {}", path.display()))
}

impl ApiClient {
    /// `identity`: PEM certificate chain and PEM private key of a device.
    pub fn new(
        base: &str,
        ca: &CertificateDer<'static>,
        identity: Option<(&str, &str)>,
    ) -> Result<Self> {
        let identity = match identity {
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .context("device certificate PEM")?;
                let key =
                    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("device key PEM")?;
                Some((chain, key))
            }
            None => None,
        };
        let tls = umbra_pki::tls::client_config(ca, identity)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building HTTP client")?;
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            return Err(anyhow!(
                "controller URL must start with https:// (got {base})"
            ));
        }
        Ok(Self {
            base,
            http,
            token: None,
        })
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}: cannot reach {}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading response")?;
        if !status.is_success() {
            return match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => Err(anyhow::Error::new(body.error)),
                Err(_) => Err(anyhow!("{method} {path}: HTTP {status}")),
            };
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{method} {path}: unexpected response"))
    }

    /// Sends a raw body to an OPA-shaped route (`/v1/…`) and returns the
    /// JSON answer (`null` for an empty one); an error status becomes an
    /// error with OPA's message and each error's position.
    pub async fn opa(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}: cannot reach {}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading response")?;
        let value: serde_json::Value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{method} {path}: HTTP {status}, not JSON"))?
        };
        if !status.is_success() {
            let mut message = format!(
                "{method} {path}: HTTP {status}: {}",
                value["message"].as_str().unwrap_or("(no message)")
            );
            for e in value["errors"].as_array().into_iter().flatten() {
                let l = &e["location"];
                message.push_str(&format!(
                    "\n  {}:{}:{}: {}",
                    l["file"].as_str().unwrap_or("?"),
                    l["row"],
                    l["col"],
                    e["message"].as_str().unwrap_or("")
                ));
            }
            return Err(anyhow!(message));
        }
        Ok(value)
    }

    /// GETs a streamed body (JSON lines): the response, once its status
    /// is a success. The whole-request limit is hours, not the usual 30 s:
    /// a large audit log takes a while to export.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(std::time::Duration::from_secs(6 * 3600));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("GET {path}: cannot reach {}", self.base))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.context("reading response")?;
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(anyhow::Error::new(body.error)),
            Err(_) => Err(anyhow!("GET {path}: HTTP {status}")),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }
}
