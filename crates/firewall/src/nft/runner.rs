//! Invoking nft: the configured command prefix (e.g. `ip netns exec NS
//! nft`) plus `-j -f -` with the JSON document on stdin.

use std::time::Duration;

use nftables::schema::Nftables;

use super::listing::{self, Listing};
use crate::Error;

#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) command: Vec<String>,
    pub(crate) table: String,
    pub(crate) timeout: Duration,
}

impl Runner {
    fn argv(&self, args: &[&str]) -> Vec<String> {
        self.command
            .iter()
            .cloned()
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect()
    }

    /// Applies `doc` as one transaction: all of it or, on error, none.
    pub(crate) async fn apply(&self, doc: &Nftables<'_>) -> Result<(), Error> {
        let json = serde_json::to_vec(doc).map_err(|e| Error::Invalid(format!("nft JSON: {e}")))?;
        crate::exec::run(&self.argv(&["-j", "-f", "-"]), Some(&json), self.timeout)
            .await
            .map(drop)
    }

    /// Lists our table; errors if it does not exist.
    pub(crate) async fn list(&self) -> Result<Listing, Error> {
        let out = crate::exec::run(
            &self.argv(&["-j", "list", "table", "inet", &self.table]),
            None,
            self.timeout,
        )
        .await?;
        listing::parse(&out)
    }

    /// Whether our table exists (a `list tables` never fails for a missing one).
    pub(crate) async fn table_exists(&self) -> Result<bool, Error> {
        let out = crate::exec::run(
            &self.argv(&["-j", "list", "tables", "inet"]),
            None,
            self.timeout,
        )
        .await?;
        let doc: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| Error::Output(e.to_string()))?;
        let objects = doc
            .get("nftables")
            .and_then(serde_json::Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(objects.iter().filter_map(|o| o.get("table")).any(|t| {
            t.get("name").and_then(serde_json::Value::as_str) == Some(self.table.as_str())
                && t.get("family").and_then(serde_json::Value::as_str) == Some("inet")
        }))
    }
}
