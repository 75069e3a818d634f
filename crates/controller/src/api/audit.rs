//! `/api/v1/admin/audit…`: the audit trail, read with filters, exported as
//! JSON lines with its hash chain and signed checkpoints, and checkpointed
//! on demand.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use umbra_proto::api::{AuditCheckpoint, AuditExportHeader, AuditLine, AuditRecord, List};
use umbra_store::export::{Entry, Walk};
use umbra_store::{AuditFilter, Outcome};

use super::ApiQuery;
use super::guard::Admin;
use crate::Controller;
use crate::api::openapi::ApiErrors;
use crate::audit::{checkpoint_view, record_view};
use crate::clock::{parse_rfc3339, rfc3339};
use crate::error::{ApiResult, Failure};

type C = State<Arc<Controller>>;

/// The largest page of the listing (and the export's page size).
const MAX_LIMIT: u32 = 10_000;
const EXPORT_PAGE: u32 = 1000;
/// Filters are exact values, compared as stored; longer ones match nothing.
const MAX_FILTER_LEN: usize = 512;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records with a greater id (paging: the last id of the previous page).
    #[serde(default)]
    pub after: i64,
    /// At most this many records, 1–10000 (default 1000).
    pub limit: Option<u32>,
    /// Exact actor, e.g. `user:ann` or `gateway:gw1`.
    pub actor: Option<String>,
    /// Exact action, e.g. `auth.login`.
    pub action: Option<String>,
    /// `allow`, `deny` or `error`.
    pub outcome: Option<String>,
    /// Records at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Records before this time (RFC 3339).
    pub until: Option<String>,
}

fn exact(name: &str, value: Option<String>) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.is_empty() || v.len() > MAX_FILTER_LEN => Err(Failure::invalid(format!(
            "`{name}` must be 1-{MAX_FILTER_LEN} bytes"
        ))),
        other => Ok(other),
    }
}

fn time(name: &str, value: Option<&str>) -> ApiResult<Option<i64>> {
    value
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| {
                Failure::invalid(format!(
                    "`{name}` must be an RFC 3339 time such as 2026-11-05T10:00:00Z, not {v:?}"
                ))
            })
        })
        .transpose()
}

impl AuditQuery {
    fn filter(self) -> ApiResult<AuditFilter> {
        let limit = self.limit.unwrap_or(1000);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Failure::invalid(format!("`limit` must be 1-{MAX_LIMIT}")));
        }
        if self.after < 0 {
            return Err(Failure::invalid("`after` must not be negative"));
        }
        let outcome = match self.outcome.as_deref() {
            None => None,
            Some("allow") => Some(Outcome::Allow),
            Some("deny") => Some(Outcome::Deny),
            Some("error") => Some(Outcome::Error),
            Some(other) => {
                return Err(Failure::invalid(format!(
                    "`outcome` must be allow, deny or error, not {other:?}"
                )));
            }
        };
        let since = time("since", self.since.as_deref())?;
        let until = time("until", self.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(Failure::invalid("`since` must be before `until`"));
        }
        Ok(AuditFilter {
            after: self.after,
            limit,
            actor: exact("actor", self.actor)?,
            action: exact("action", self.action)?,
            outcome,
            since,
            until,
            through: None,
        })
    }
}

#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", params(AuditQuery), security(("bearer" = [])), responses((status = 200, description = "Audit records matching every filter given, oldest first, with their hash-chain fields", body = List<AuditRecord>), ApiErrors))]
pub async fn list(
    State(c): C,
    _admin: Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<List<AuditRecord>>> {
    let filter = q.filter()?;
    let items = c
        .store
        .audit_query(&filter)
        .await?
        .into_iter()
        .map(record_view)
        .collect();
    Ok(Json(List { items }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Records at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Records before this time (RFC 3339).
    pub until: Option<String>,
}

/// Streams the log as JSON lines: a header (with the checkpoint key), then
/// every record up to the current head, each followed by the checkpoints
/// covering it, then checkpoints covering records past the end (evidence
/// of truncation). Read a page at a time: memory does not grow with the
/// log. Without filters, the output is what `umbra admin audit verify`
/// checks.
#[utoipa::path(get, path = "/api/v1/admin/audit/export", tag = "admin", params(ExportQuery), security(("bearer" = [])), responses((status = 200, description = "JSON lines (`application/x-ndjson`), one `AuditLine` each", content_type = "application/x-ndjson", body = AuditLine), ApiErrors))]
pub async fn export(
    State(c): C,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let filtered = q.since.is_some() || q.until.is_some();
    let filter = AuditQuery {
        limit: Some(EXPORT_PAGE),
        since: q.since,
        until: q.until,
        ..AuditQuery::default()
    }
    .filter()?;
    let mut walk = Walk::start(c.store.as_ref(), filter).await?;
    let key = c.audit_key.public_key();
    let header = AuditLine::Header(AuditExportHeader {
        format: "umbra-audit-export".into(),
        version: 1,
        exported_at: rfc3339(c.now()),
        public_key: key.to_hex(),
        key_id: key.key_id(),
        last_id: walk.head().last_id,
        filtered,
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let first = line(&header).map_err(|_| Failure::internal())?;
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            let chunk = match walk.next(c.store.as_ref()).await {
                Ok(Some(page)) => lines(page),
                Ok(None) => return,
                Err(e) => Err(e.to_string()),
            };
            // An error ends the body abnormally: the client sees a failed
            // transfer, never a silently short export.
            let chunk = chunk.map_err(|e| {
                tracing::error!(error = %e, "audit export failed");
                std::io::Error::other("audit export failed")
            });
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn line(l: &AuditLine) -> serde_json::Result<Bytes> {
    let mut v = serde_json::to_vec(l)?;
    v.push(b'\n');
    Ok(Bytes::from(v))
}

fn lines(page: Vec<Entry>) -> Result<Bytes, String> {
    let mut out = Vec::new();
    for entry in page {
        let l = match entry {
            Entry::Record(r) => AuditLine::Record(record_view(r)),
            Entry::Checkpoint(cp) => AuditLine::Checkpoint(checkpoint_view(cp)),
        };
        serde_json::to_writer(&mut out, &l).map_err(|e| e.to_string())?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// Signs the chain's head now (the controller also does so every
/// `audit.checkpoint_interval_seconds`); returns the latest checkpoint if
/// nothing was appended since. Export it to keep it off the host.
#[utoipa::path(post, path = "/api/v1/admin/audit/checkpoints", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "The checkpoint covering the current head", body = AuditCheckpoint), ApiErrors))]
pub async fn checkpoint(State(c): C, _admin: Admin) -> ApiResult<Json<AuditCheckpoint>> {
    Ok(Json(checkpoint_view(c.checkpoint_audit().await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(f: impl FnOnce(&mut AuditQuery)) -> Result<AuditFilter, String> {
        let mut query = AuditQuery::default();
        f(&mut query);
        query.filter().map_err(|e| e.message)
    }

    #[test]
    fn filters_are_validated_with_clear_errors() {
        assert_eq!(q(|_| {}).expect("defaults").limit, 1000);
        let ok = q(|q| {
            q.actor = Some("user:ann".into());
            q.outcome = Some("deny".into());
            q.since = Some("2026-11-05T10:00:00Z".into());
            q.until = Some("2026-11-05T11:00:00Z".into());
        })
        .expect("valid");
        assert_eq!(ok.outcome, Some(Outcome::Deny));
        assert_eq!(ok.until.zip(ok.since).map(|(u, s)| u - s), Some(3600));
        let err = |f: fn(&mut AuditQuery)| q(f).expect_err("invalid");
        assert!(err(|q| q.outcome = Some("maybe".into())).contains("allow, deny or error"));
        assert!(err(|q| q.since = Some("yesterday".into())).contains("RFC 3339"));
        assert!(err(|q| q.limit = Some(0)).contains("limit"));
        assert!(err(|q| q.limit = Some(10_001)).contains("limit"));
        assert!(err(|q| q.after = -1).contains("after"));
        assert!(err(|q| q.actor = Some(String::new())).contains("actor"));
        assert!(
            err(|q| {
                q.since = Some("2026-11-05T11:00:00Z".into());
                q.until = Some("2026-11-05T10:00:00Z".into());
            })
            .contains("before")
        );
    }
}
