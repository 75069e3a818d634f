//! Command templates: an argv vector whose arguments may contain
//! placeholders. Values are substituted per argument and the result runs
//! without a shell, so a placeholder can never add an argument or a
//! command. Only the known `{name}` tokens are replaced; other braces stay
//! literal so JSON arguments (cloud CLIs) need no escaping.

use std::net::IpAddr;
use std::time::Duration;

use crate::PinholeKey;

/// Placeholders a template may use.
pub const PLACEHOLDERS: [&str; 5] = ["{source}", "{family}", "{proto}", "{port}", "{timeout}"];

/// An argv template, e.g. `["aws", "ec2", "authorize-security-group-ingress",
/// "--cidr", "{source}/32", "--protocol", "{proto}", "--port", "{port}"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<String>);

/// The values one command run substitutes.
pub(crate) struct Values {
    source: IpAddr,
    proto: &'static str,
    port: String,
    timeout: String,
}

impl Values {
    pub(crate) fn pinhole(key: &PinholeKey, timeout: Duration) -> Self {
        Self {
            source: key.source,
            proto: key.proto.as_str(),
            port: key.port.to_string(),
            timeout: whole_seconds(timeout).to_string(),
        }
    }

    /// A block has no protocol or port; those placeholders become empty.
    pub(crate) fn block(source: IpAddr, timeout: Duration) -> Self {
        Self {
            source,
            proto: "",
            port: String::new(),
            timeout: whole_seconds(timeout).to_string(),
        }
    }
}

/// Seconds rounded up: a sub-second remainder must not shorten a pinhole.
pub(crate) fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Template {
    /// Fails on an empty argv (there would be no program to run).
    pub fn new(argv: Vec<String>) -> Result<Self, String> {
        match argv.first() {
            None => Err("empty command".into()),
            Some(p) if p.is_empty() => Err("empty program name".into()),
            Some(_) => Ok(Self(argv)),
        }
    }

    pub fn argv(&self) -> &[String] {
        &self.0
    }

    pub(crate) fn render(&self, v: &Values) -> Vec<String> {
        let family = if v.source.is_ipv4() { "4" } else { "6" };
        self.0
            .iter()
            .map(|arg| {
                if !arg.contains('{') {
                    return arg.clone();
                }
                arg.replace("{source}", &v.source.to_string())
                    .replace("{family}", family)
                    .replace("{proto}", v.proto)
                    .replace("{port}", &v.port)
                    .replace("{timeout}", &v.timeout)
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::Protocol;

    #[test]
    fn substitutes_inside_arguments_and_keeps_other_braces() {
        let t = Template::new(
            [
                "cli",
                "--cidr={source}/32",
                "[{\"p\":\"{proto}\",\"port\":{port}}]",
                "{timeout}",
                "v{family}",
            ]
            .map(String::from)
            .to_vec(),
        )
        .unwrap();
        let key = PinholeKey::new("fd00::7".parse().unwrap(), Protocol::Udp, 53);
        let argv = t.render(&Values::pinhole(&key, Duration::from_millis(2500)));
        assert_eq!(
            argv,
            [
                "cli",
                "--cidr=fd00::7/32",
                "[{\"p\":\"udp\",\"port\":53}]",
                "3",
                "v6"
            ]
        );
    }

    #[test]
    fn rejects_an_empty_command() {
        assert!(Template::new(vec![]).is_err());
        assert!(Template::new(vec![String::new()]).is_err());
    }
}
