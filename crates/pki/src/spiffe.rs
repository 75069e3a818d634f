//! SPIFFE trust domains and the IDs Umbra issues.
//!
//! Devices are `spiffe://<td>/device/<id>`; workloads (a later round) will be
//! `spiffe://<td>/ns/<ns>/sa/<sa>`. The trust domain grammar follows the
//! SPIFFE ID spec: lowercase letters, digits, `.`, `-`, `_`.

use crate::PkiError;

/// A validated SPIFFE trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub const MAX_LEN: usize = 255;

    pub fn new(name: &str) -> Result<Self, PkiError> {
        let ok = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(PkiError::TrustDomain(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn device_id(&self, device: &str) -> String {
        format!("spiffe://{}/device/{device}", self.0)
    }

    /// The controller's own ID: devices derive their key for knocking at a
    /// dark controller from it.
    pub fn controller_id(&self) -> String {
        format!("spiffe://{}/controller", self.0)
    }

    pub fn gateway_id(&self, name: &str) -> String {
        format!("spiffe://{}/gateway/{name}", self.0)
    }

    /// The gateway name in `uri` if it is a gateway SPIFFE ID of this trust
    /// domain.
    pub fn parse_gateway_id<'a>(&self, uri: &'a str) -> Option<&'a str> {
        let rest = uri
            .strip_prefix("spiffe://")?
            .strip_prefix(self.0.as_str())?;
        let name = rest.strip_prefix("/gateway/")?;
        valid_gateway_name(name).then_some(name)
    }

    /// The device id in `uri` if it is a device SPIFFE ID of this trust domain.
    pub fn parse_device_id<'a>(&self, uri: &'a str) -> Option<&'a str> {
        let rest = uri
            .strip_prefix("spiffe://")?
            .strip_prefix(self.0.as_str())?;
        let id = rest.strip_prefix("/device/")?;
        let valid = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        valid.then_some(id)
    }
}

/// Gateway names: 1–63 lowercase letters, digits and `-`, starting with a
/// letter or digit (they appear in SPIFFE IDs and in DNS-like contexts).
pub fn valid_gateway_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl std::fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_grammar() {
        assert!(TrustDomain::new("umbra.local").is_ok());
        assert!(TrustDomain::new("Umbra.local").is_err());
        assert!(TrustDomain::new("").is_err());
        assert!(TrustDomain::new("a/b").is_err());
        assert!(TrustDomain::new("a:80").is_err());
    }

    #[test]
    fn gateway_ids_round_trip_and_are_not_devices() {
        let td = TrustDomain::new("umbra.local").expect("valid");
        let id = td.gateway_id("edge-1");
        assert_eq!(td.parse_gateway_id(&id), Some("edge-1"));
        assert_eq!(td.parse_device_id(&id), None);
        assert_eq!(td.parse_gateway_id(&td.device_id("edge-1")), None);
        assert_eq!(
            td.parse_gateway_id("spiffe://umbra.local/gateway/Edge"),
            None
        );
        assert_eq!(
            td.parse_gateway_id("spiffe://umbra.local/gateway/a/b"),
            None
        );
    }

    #[test]
    fn device_ids_round_trip_and_foreign_ones_do_not_parse() {
        let td = TrustDomain::new("umbra.local").expect("valid");
        let id = td.device_id("0193-abc");
        assert_eq!(id, "spiffe://umbra.local/device/0193-abc");
        assert_eq!(td.parse_device_id(&id), Some("0193-abc"));
        assert_eq!(td.parse_device_id("spiffe://umbra.localx/device/a"), None);
        assert_eq!(td.parse_device_id("spiffe://other/device/a"), None);
        assert_eq!(td.parse_device_id("spiffe://umbra.local/ns/a/sa/b"), None);
        assert_eq!(
            td.parse_device_id("spiffe://umbra.local/device/a/../b"),
            None
        );
    }
}
