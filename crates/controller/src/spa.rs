//! SPA key material on the controller's side.
//!
//! A device's SPA secret is not stored: it is derived from the
//! key-encryption key and the device ID (HMAC-SHA256, its own context), so
//! a database dump holds none of them and the controller can hand a
//! gateway its keys at any time. Each gateway is given only
//! `HKDF(device secret, its SPIFFE ID)` (`umbra_spa::derive_gateway_key`):
//! a gateway that is compromised can verify knocks meant for itself and
//! forge none for another gateway. A device's secret changes only with a
//! new enrollment (a new device ID); revoking the device is what stops its
//! knocks.

use umbra_proto::control::{Event, SpaDevice};
use umbra_spa::{DeviceSecret, derive_gateway_key};

use crate::Controller;

const CONTEXT: &str = "umbra-spa device secret v1";

/// The device's SPA secret.
pub fn device_secret(c: &Controller, device_id: &str) -> Option<DeviceSecret> {
    let mac = hex::decode(c.config.kek.mac(CONTEXT, device_id.as_bytes())).ok()?;
    DeviceSecret::from_slice(&mac).ok()
}

/// The key gateway `name` holds for `device_id`, base64.
pub fn gateway_key(c: &Controller, device_id: &str, gateway: &str) -> Option<String> {
    let secret = device_secret(c, device_id)?;
    let id = c.ca.trust_domain().gateway_id(gateway);
    Some(derive_gateway_key(&secret, &id).to_base64())
}

/// A stored `device_approved` event as gateway `gateway` must receive it:
/// with its own key in. Other events pass through untouched.
pub fn personalize(c: &Controller, gateway: &str, json: &str) -> String {
    // Cheap test first: almost every event is something else.
    if !json.contains("\"device_approved\"") {
        return json.to_owned();
    }
    match serde_json::from_str::<Event>(json) {
        Ok(Event::DeviceApproved {
            device,
            user,
            groups,
            ..
        }) => {
            let key = gateway_key(c, &device, gateway).unwrap_or_default();
            let event = Event::DeviceApproved {
                device,
                user,
                groups,
                key,
            };
            serde_json::to_string(&event).unwrap_or_else(|_| json.to_owned())
        }
        _ => json.to_owned(),
    }
}

/// Every approved device of an active user... and of a suspended one (the
/// gateway refuses those by its user list), with gateway `gateway`'s keys.
/// `devices` is the store's device list, which the caller already has.
pub async fn devices_for(
    c: &Controller,
    gateway: &str,
    devices: &[umbra_store::DeviceRecord],
) -> Result<Vec<SpaDevice>, umbra_store::StoreError> {
    let users: std::collections::HashMap<String, Vec<String>> = c
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| (u.id, u.groups))
        .collect();
    Ok(devices
        .iter()
        .filter(|d| d.status == umbra_proto::api::DeviceStatus::Approved)
        .filter_map(|d| {
            Some(SpaDevice {
                key: gateway_key(c, &d.id, gateway)?,
                groups: users.get(&d.user_id).cloned().unwrap_or_default(),
                user: d.user_name.clone(),
                device: d.id.clone(),
            })
        })
        .collect())
}

/// Announces an approved device to the gateways: it may knock, and here is
/// its posture (the policy's compliance checks need it from the start).
pub async fn publish_approval(
    c: &Controller,
    device_id: &str,
    user: &str,
    groups: &[String],
    posture: Option<umbra_proto::PostureReport>,
) -> Result<(), crate::error::Failure> {
    c.publish(&approved_event(device_id, user, groups)).await?;
    if let Some(posture) = posture {
        c.publish(&Event::PostureChanged {
            device: device_id.to_owned(),
            posture,
        })
        .await?;
    }
    Ok(())
}

/// The event announcing that `device_id` may knock.
pub fn approved_event(device_id: &str, user: &str, groups: &[String]) -> Event {
    Event::DeviceApproved {
        device: device_id.to_owned(),
        user: user.to_owned(),
        groups: groups.to_vec(),
        key: String::new(),
    }
}
