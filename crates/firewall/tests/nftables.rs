//! The nftables backend against the real kernel, inside network
//! namespaces each test creates (see `support`). Run as root; with
//! `CI=true` a host that cannot run them fails instead of skipping.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{
    CLIENT4, CLIENT6, Lab, OTHER4, OTHER6, Probe, SERVER4, SERVER6, ip, round_trip, serial,
};
use tokio::time::Instant;
use umbra_firewall::{
    Error, NftPinholes, NftSettings, Pinhole, PinholeKey, Pinholes, Protected, Protocol,
};

const PORT: u16 = 8080;

fn firewall(lab: &Lab) -> NftPinholes {
    NftPinholes::new(NftSettings {
        command: lab.nft_command(),
        ..NftSettings::default()
    })
    .unwrap()
}

fn tcp(source: &str, secs: u64) -> Pinhole {
    Pinhole::new(ip(source), Protocol::Tcp, PORT, Duration::from_secs(secs))
}

/// Waits (bounded) until the kernel has removed every pinhole.
async fn until_expired(fw: &NftPinholes, limit: Duration) -> Duration {
    let start = Instant::now();
    while fw.count().await.unwrap() > 0 {
        assert!(
            start.elapsed() < limit,
            "pinholes still present after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_pinhole_admits_one_source_then_expires_and_live_flows_survive() {
    let _serial = serial().await;
    let Some(lab) = Lab::new() else { return };
    let _server = lab.listen(PORT);
    assert_eq!(
        lab.probe(CLIENT4, SERVER4, PORT),
        Probe::Connected,
        "open before install"
    );

    let fw = firewall(&lab);
    fw.install(&[Protected::new(Protocol::Tcp, PORT)])
        .await
        .unwrap();
    assert_eq!(
        lab.probe(CLIENT4, SERVER4, PORT),
        Probe::Filtered,
        "dark after install"
    );

    let opened = Instant::now();
    fw.open(&[tcp(CLIENT4, 2)]).await.unwrap();
    let mut live = lab.connect(CLIENT4, SERVER4, PORT).unwrap();
    assert_eq!(round_trip(&mut live, b"hello").unwrap(), b"hello");
    assert_eq!(
        lab.probe(OTHER4, SERVER4, PORT),
        Probe::Filtered,
        "another source stays out"
    );
    let listed = fw.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].key,
        PinholeKey::new(ip(CLIENT4), Protocol::Tcp, PORT)
    );

    // The kernel expires the element on time (2 s, whole-second granularity).
    until_expired(&fw, Duration::from_secs(6)).await;
    let life = opened.elapsed();
    assert!(
        life >= Duration::from_millis(1900),
        "expired early: {life:?}"
    );
    assert!(
        life <= Duration::from_millis(3000),
        "expired late: {life:?}"
    );
    assert_eq!(
        lab.probe(CLIENT4, SERVER4, PORT),
        Probe::Filtered,
        "new connections need a new knock"
    );
    assert_eq!(
        round_trip(&mut live, b"still here").unwrap(),
        b"still here",
        "established flow survives"
    );
    fw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_pinholes_work_like_ipv4() {
    let _serial = serial().await;
    let Some(lab) = Lab::new() else { return };
    let _server = lab.listen(PORT);
    let fw = firewall(&lab);
    fw.install(&[Protected::new(Protocol::Tcp, PORT)])
        .await
        .unwrap();
    assert_eq!(lab.probe(CLIENT6, SERVER6, PORT), Probe::Filtered);

    fw.open(&[tcp(CLIENT6, 30)]).await.unwrap();
    assert_eq!(lab.probe(CLIENT6, SERVER6, PORT), Probe::Connected);
    assert_eq!(lab.probe(OTHER6, SERVER6, PORT), Probe::Filtered);
    // An IPv6 pinhole opens nothing for the same host's IPv4 address.
    assert_eq!(lab.probe(CLIENT4, SERVER4, PORT), Probe::Filtered);

    fw.close(PinholeKey::new(ip(CLIENT6), Protocol::Tcp, PORT))
        .await
        .unwrap();
    fw.close(PinholeKey::new(ip(CLIENT6), Protocol::Tcp, PORT))
        .await
        .unwrap();
    assert_eq!(lab.probe(CLIENT6, SERVER6, PORT), Probe::Filtered);
    assert_eq!(fw.count().await.unwrap(), 0);
    fw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_pinholes_are_per_protocol() {
    let _serial = serial().await;
    let Some(lab) = Lab::new() else { return };
    let _tcp = lab.listen(PORT);
    let _udp = lab.udp_echo(PORT);
    let fw = firewall(&lab);
    let protected = [
        Protected::new(Protocol::Tcp, PORT),
        Protected::new(Protocol::Udp, PORT),
    ];
    fw.install(&protected).await.unwrap();
    assert!(
        !lab.udp_answered(CLIENT4, SERVER4, PORT),
        "dark after install"
    );

    let udp = |s| Pinhole::new(ip(s), Protocol::Udp, PORT, Duration::from_secs(30));
    fw.open(&[udp(CLIENT4), udp(CLIENT6)]).await.unwrap();
    assert!(lab.udp_answered(CLIENT4, SERVER4, PORT));
    assert!(lab.udp_answered(CLIENT6, SERVER6, PORT));
    assert!(!lab.udp_answered(OTHER4, SERVER4, PORT));
    // A UDP pinhole opens nothing for TCP on the same port.
    assert_eq!(lab.probe(CLIENT4, SERVER4, PORT), Probe::Filtered);
    fw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_pinholes_and_shutdown_removes_the_table() {
    let _serial = serial().await;
    let Some(lab) = Lab::new() else { return };
    let _server = lab.listen(PORT);
    let protected = [Protected::new(Protocol::Tcp, PORT)];
    let before = firewall(&lab);
    before.install(&protected).await.unwrap();
    before
        .open(&[tcp(CLIENT4, 60), tcp(CLIENT6, 60)])
        .await
        .unwrap();
    let rules_before = lab
        .nft(&["list", "chain", "inet", "umbra", "input"])
        .unwrap();
    drop(before); // a crash or restart: no shutdown

    let after = firewall(&lab);
    after.install(&protected).await.unwrap();
    assert_eq!(
        after.count().await.unwrap(),
        2,
        "pinholes survive a restart"
    );
    assert_eq!(
        lab.nft(&["list", "chain", "inet", "umbra", "input"])
            .unwrap(),
        rules_before,
        "rules not duplicated"
    );
    assert_eq!(lab.probe(CLIENT4, SERVER4, PORT), Probe::Connected);
    assert_eq!(lab.probe(OTHER4, SERVER4, PORT), Probe::Filtered);
    // Re-opening a restored pinhole with a longer ttl refreshes it.
    after.open(&[tcp(CLIENT4, 120)]).await.unwrap();
    let refreshed = after.list().await.unwrap();
    assert!(
        refreshed
            .iter()
            .any(|p| p.key.source == ip(CLIENT4) && p.expires_in > Duration::from_secs(100))
    );

    after.shutdown().await.unwrap();
    after.shutdown().await.unwrap();
    assert!(
        !lab.nft(&["list", "tables"]).unwrap().contains("umbra"),
        "table removed"
    );
    assert!(matches!(
        after.open(&[tcp(CLIENT4, 1)]).await,
        Err(Error::ShutDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_tables_are_untouched_and_their_drops_still_apply() {
    let _serial = serial().await;
    let Some(lab) = Lab::new() else { return };
    let _server = lab.listen(PORT);
    let _other = lab.listen(9090);
    // A pre-existing ruleset Umbra does not own, with a drop of its own.
    lab.nft(&["add", "table", "inet", "other"]).unwrap();
    lab.nft(&[
        "add",
        "chain",
        "inet",
        "other",
        "input",
        "{ type filter hook input priority 10; policy accept; }",
    ])
    .unwrap();
    lab.nft(&[
        "add", "rule", "inet", "other", "input", "ip", "saddr", OTHER4, "tcp", "dport", "8080",
        "drop",
    ])
    .unwrap();
    let listed_before = lab.nft(&["list", "table", "inet", "other"]).unwrap();

    let fw = firewall(&lab);
    fw.install(&[Protected::new(Protocol::Tcp, PORT)])
        .await
        .unwrap();
    fw.open(&[tcp(CLIENT4, 30), tcp(OTHER4, 30)]).await.unwrap();
    assert_eq!(lab.probe(CLIENT4, SERVER4, PORT), Probe::Connected);
    assert_eq!(
        lab.probe(OTHER4, SERVER4, PORT),
        Probe::Filtered,
        "our accept does not override their drop"
    );
    assert_eq!(
        lab.probe(OTHER4, SERVER4, 9090),
        Probe::Connected,
        "unprotected ports are not ours"
    );
    fw.shutdown().await.unwrap();
    assert_eq!(
        lab.nft(&["list", "table", "inet", "other"]).unwrap(),
        listed_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_cuts_live_flows_until_lifted() {
    let _serial = serial().await;
    let Some(lab) = Lab::new() else { return };
    let _server = lab.listen(PORT);
    let fw = firewall(&lab);
    fw.install(&[Protected::new(Protocol::Tcp, PORT)])
        .await
        .unwrap();
    fw.open(&[tcp(CLIENT4, 60), tcp(OTHER4, 60)]).await.unwrap();
    let mut live = lab.connect(CLIENT4, SERVER4, PORT).unwrap();

    fw.block(ip(CLIENT4), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(fw.blocked().await.unwrap()[0].source, ip(CLIENT4));
    assert!(
        round_trip(&mut live, b"x").is_err(),
        "established flow is cut"
    );
    assert_eq!(lab.probe(CLIENT4, SERVER4, PORT), Probe::Filtered);
    assert_eq!(
        lab.probe(OTHER4, SERVER4, PORT),
        Probe::Connected,
        "only that source"
    );

    fw.unblock(ip(CLIENT4)).await.unwrap();
    assert!(fw.blocked().await.unwrap().is_empty());
    assert_eq!(lab.probe(CLIENT4, SERVER4, PORT), Probe::Connected);
    fw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_are_coalesced_and_udp_is_listed() {
    let _serial = serial().await;
    let Some(lab) = Lab::new() else { return };
    let fw = std::sync::Arc::new(firewall(&lab));
    fw.install(&[
        Protected::new(Protocol::Tcp, PORT),
        Protected::new(Protocol::Udp, 5353),
    ])
    .await
    .unwrap();
    let tasks: Vec<_> = (0..2000u32)
        .map(|i| {
            let fw = std::sync::Arc::clone(&fw);
            tokio::spawn(async move {
                let source = std::net::Ipv4Addr::from(0x0a63_0000 + i);
                fw.open(&[Pinhole::new(
                    source.into(),
                    Protocol::Tcp,
                    PORT,
                    Duration::from_secs(60),
                )])
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    fw.open(&[Pinhole::new(
        ip(CLIENT6),
        Protocol::Udp,
        5353,
        Duration::from_secs(60),
    )])
    .await
    .unwrap();
    let listed = fw.list().await.unwrap();
    assert_eq!(listed.len(), 2001);
    assert!(
        listed
            .iter()
            .any(|p| p.key.proto == Protocol::Udp && p.key.source == ip(CLIENT6))
    );
    fw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_errors_carry_stderr() {
    let _serial = serial().await;
    let Some(lab) = Lab::new() else { return };
    // Listing before install: the table does not exist yet.
    match firewall(&lab).list().await {
        Err(Error::Failed { stderr, .. }) => {
            assert!(stderr.contains("No such file or directory"), "{stderr}")
        }
        other => panic!("expected nft's error, got {other:?}"),
    }
    let missing = NftPinholes::new(NftSettings {
        command: vec!["/nonexistent/nft".into()],
        ..NftSettings::default()
    })
    .unwrap();
    assert!(matches!(
        missing.install(&[]).await,
        Err(Error::Spawn { .. })
    ));
}
