//! The transaction plan, checked as the JSON nft would read.

use super::*;
use crate::Protocol;

fn key(addr: &str, port: u16) -> Entry {
    Entry::Pinhole(PinholeKey::new(addr.parse().unwrap(), Protocol::Tcp, port))
}

/// `(command, set, element count)` per object, in order.
fn shape(doc: Option<Nftables<'static>>) -> Vec<(String, String, usize)> {
    let Some(doc) = doc else { return vec![] };
    let json = serde_json::to_value(&doc).unwrap();
    json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let (cmd, body) = o.as_object().unwrap().iter().next().unwrap();
            let el = &body["element"];
            (
                cmd.clone(),
                el["name"].as_str().unwrap().to_owned(),
                el["elem"].as_array().unwrap().len(),
            )
        })
        .collect()
}

fn row(cmd: &str, set: &str, n: usize) -> (String, String, usize) {
    (cmd.into(), set.into(), n)
}

#[test]
fn new_pinholes_are_one_add_per_family() {
    let now = Instant::now();
    let ttl = Duration::from_millis(1500);
    let changes = [
        Change::Open(key("10.0.0.1", 22), ttl),
        Change::Open(key("10.0.0.2", 22), ttl),
        Change::Open(key("fd00::1", 22), ttl),
        Change::Open(Entry::Block("10.9.9.9".parse().unwrap()), ttl),
    ];
    let (doc, updates) = plan("umbra", &changes, &HashMap::new(), now);
    assert_eq!(
        shape(doc),
        [
            row("add", "pinholes4", 2),
            row("add", "pinholes6", 1),
            row("add", "blocked4", 1)
        ]
    );
    // Sub-second ttls round up: the kernel takes whole seconds.
    assert!(
        updates
            .iter()
            .all(|(_, d)| *d == Some(now + Duration::from_secs(2)))
    );
}

#[test]
fn reopening_a_live_element_refreshes_it_only_if_longer() {
    let now = Instant::now();
    let hints = HashMap::from([(key("10.0.0.1", 22), now + Duration::from_secs(10))]);
    let longer = [Change::Open(key("10.0.0.1", 22), Duration::from_secs(30))];
    assert_eq!(
        shape(plan("umbra", &longer, &hints, now).0),
        [
            row("add", "pinholes4", 1),
            row("delete", "pinholes4", 1),
            row("add", "pinholes4", 1)
        ]
    );
    let shorter = [Change::Open(key("10.0.0.1", 22), Duration::from_secs(5))];
    let (doc, updates) = plan("umbra", &shorter, &hints, now);
    assert!(doc.is_none() && updates.is_empty());
}

#[test]
fn close_never_fails_on_a_missing_element() {
    let now = Instant::now();
    let (doc, updates) = plan(
        "umbra",
        &[Change::Close(key("fd00::1", 443))],
        &HashMap::new(),
        now,
    );
    assert_eq!(
        shape(doc),
        [row("add", "pinholes6", 1), row("delete", "pinholes6", 1)]
    );
    assert_eq!(updates, [(key("fd00::1", 443), None)]);
}

#[test]
fn the_last_change_to_an_element_wins() {
    let now = Instant::now();
    let ttl = Duration::from_secs(5);
    let k = key("10.0.0.1", 22);
    let (doc, _) = plan(
        "umbra",
        &[Change::Open(k, ttl), Change::Close(k)],
        &HashMap::new(),
        now,
    );
    assert_eq!(
        shape(doc),
        [row("add", "pinholes4", 1), row("delete", "pinholes4", 1)]
    );
    // Close then open of a live element sets exactly the new (shorter) ttl.
    let hints = HashMap::from([(k, now + Duration::from_secs(60))]);
    let (doc, updates) = plan(
        "umbra",
        &[Change::Close(k), Change::Open(k, ttl)],
        &hints,
        now,
    );
    assert_eq!(shape(doc).len(), 3);
    assert_eq!(updates, [(k, Some(now + ttl))]);
}
