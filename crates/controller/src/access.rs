//! Which services a user may reach, and through which gateway: the list a
//! login returns so the agent knows where to connect. The gateway decides
//! each request again; this list is a convenience, not a permission.

use umbra_policy::access::{AccessRequest, AllowLists, Authorizer};
use umbra_proto::control::{Grant, ServiceAccess};
use umbra_store::GatewayStatus;

use crate::Controller;
use crate::error::Failure;

pub async fn granted_services(
    c: &Controller,
    user: &str,
    groups: &[String],
) -> Result<Vec<ServiceAccess>, Failure> {
    let grants: Vec<Grant> = c
        .store
        .list_services()
        .await?
        .into_iter()
        .map(|s| Grant {
            service: s.name,
            allow_users: s.allow_users,
            allow_groups: s.allow_groups,
        })
        .collect();
    let lists = AllowLists::new(&grants);
    let gateways = c.store.list_gateways().await?;
    let mut out = Vec::new();
    for g in &grants {
        let request = AccessRequest {
            user,
            groups,
            device: "",
            service: &g.service,
            method: "",
            path: "/",
            risk: 0,
        };
        if !lists.decide(&request).allow {
            continue;
        }
        for gw in gateways
            .iter()
            .filter(|gw| gw.status == GatewayStatus::Active)
        {
            let (Some(url), Some(route)) = (
                gw.url.as_ref(),
                gw.routes.iter().find(|r| r.service == g.service),
            ) else {
                continue;
            };
            out.push(ServiceAccess {
                gateway: gw.name.clone(),
                spa_port: gw.spa_port,
                name: g.service.clone(),
                gateway_url: url.clone(),
                host: route.host.clone(),
                protocol: if route.protocol == "tcp" {
                    umbra_proto::control::Protocol::Tcp
                } else {
                    umbra_proto::control::Protocol::Http
                },
            });
        }
    }
    Ok(out)
}
