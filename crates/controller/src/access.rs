//! Which services a user may reach, and through which gateway: the list a
//! login returns so the agent knows where to connect. A service is listed
//! when some allow rule (a grant, or a rule of the native policy) names the
//! user or a group and the service; the gateway decides each request again,
//! in full. This list is a convenience, not a permission.

use umbra_policy::access::with_grants;
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
    let rules = with_grants(&c.config.policy.config, &grants).rules;
    let gateways = c.store.list_gateways().await?;
    let mut out = Vec::new();
    for g in &grants {
        if !rules.may_allow(user, groups, &g.service) {
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
