//! Blocked source addresses: what threat detection blocked at every
//! gateway, listed, added and lifted by an admin.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::ApiJson;
use super::guard::Admin;
use crate::Controller;
use crate::api::openapi::ApiErrors;
use crate::clock::rfc3339;
use crate::error::{ApiResult, Failure};

type C = State<Arc<Controller>>;

/// A blocked source, as listed.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Block {
    pub address: String,
    pub until: String,
    pub reason: String,
    pub created_at: String,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub address: String,
    /// 1..=2592000 (30 days).
    pub seconds: u64,
    #[serde(default)]
    pub reason: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BlockList {
    pub items: Vec<Block>,
}

#[utoipa::path(get, path = "/api/v1/admin/blocks", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "Source addresses blocked at every gateway now", body = BlockList), ApiErrors))]
pub async fn list(State(c): C, _admin: Admin) -> ApiResult<Json<BlockList>> {
    let items = c
        .store
        .blocked_sources(c.now())
        .await?
        .into_iter()
        .map(|b| Block {
            address: b.address,
            until: rfc3339(b.until),
            reason: b.reason,
            created_at: rfc3339(b.created_at),
        })
        .collect();
    Ok(Json(BlockList { items }))
}

#[utoipa::path(post, path = "/api/v1/admin/blocks", tag = "admin", request_body = BlockRequest, security(("bearer" = [])), responses((status = 200, description = "Blocked", body = Object), ApiErrors))]
pub async fn add(
    State(c): C,
    admin: Admin,
    ApiJson(req): ApiJson<BlockRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let ip: IpAddr = req
        .address
        .parse()
        .map_err(|_| Failure::invalid("address: an IPv4 or IPv6 address"))?;
    if !(1..=30 * 86_400).contains(&req.seconds) || req.reason.chars().count() > 256 {
        return Err(Failure::invalid(
            "seconds: 1..=2592000; reason: at most 256 characters",
        ));
    }
    let reason = format!("admin {}: {}", admin.actor, req.reason);
    c.block_source(ip, req.seconds, &reason).await?;
    admin
        .audit(
            &c,
            "source.block",
            &format!("source:{ip}"),
            &format!("for {} s: {}", req.seconds, req.reason),
        )
        .await?;
    Ok(Json(serde_json::json!({ "address": ip.to_string() })))
}

#[utoipa::path(delete, path = "/api/v1/admin/blocks/{address}", tag = "admin", params(("address" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "Lifted", body = Object), ApiErrors))]
pub async fn lift(
    State(c): C,
    admin: Admin,
    Path(address): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let ip = lift_as(&c, &admin, &address).await?;
    Ok(Json(serde_json::json!({ "address": ip.to_string() })))
}

/// Lifts the block on `address` at every gateway, audited as
/// `source.unblock` (the API's and the dashboard's).
pub(super) async fn lift_as(c: &Controller, admin: &Admin, address: &str) -> ApiResult<IpAddr> {
    let ip: IpAddr = address
        .parse()
        .map_err(|_| Failure::invalid("address: an IPv4 or IPv6 address"))?;
    let ip = ip.to_canonical();
    if !c.store.unblock_source(&ip.to_string()).await? {
        return Err(Failure::not_found("block"));
    }
    c.publish(&umbra_proto::control::Event::SourceUnblocked {
        address: ip.to_string(),
    })
    .await?;
    admin
        .audit(c, "source.unblock", &format!("source:{ip}"), "")
        .await?;
    Ok(ip)
}
