//! Runs the backend against a recorder script that appends its argv to a
//! log, on the real clock with one-second ttls (a paused clock would time
//! out the child processes).

use std::path::{Path, PathBuf};

use super::*;
use crate::Protocol;

struct Recorder {
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Recorder {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        Self { _dir: dir, log }
    }

    /// `sh -c` here only runs the fixed recorder; the rendered values are
    /// positional arguments, never part of the script.
    fn template(&self, verb: &str, args: &[&str]) -> Template {
        let mut argv = vec!["sh".into(), "-c".into(), "echo \"$*\" >> \"$0\"".into()];
        argv.push(self.log.display().to_string());
        argv.push(verb.into());
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        Template::new(argv).unwrap()
    }

    fn lines(&self) -> Vec<String> {
        read_lines(&self.log)
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..100 {
            if self.lines().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.lines()
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn backend(r: &Recorder, with_block: bool) -> CommandPinholes {
    let args = ["{source}", "{family}", "{proto}", "{port}", "{timeout}"];
    CommandPinholes::new(CommandSettings {
        open: r.template("open", &args),
        close: r.template("close", &args),
        block: with_block.then(|| r.template("block", &args)),
        unblock: with_block.then(|| r.template("unblock", &args)),
        timeout: Duration::from_secs(10),
    })
}

fn hole(source: &str, port: u16, secs: u64) -> Pinhole {
    Pinhole::new(
        source.parse().unwrap(),
        Protocol::Tcp,
        port,
        Duration::from_secs(secs),
    )
}

#[tokio::test]
async fn opens_once_and_closes_when_the_ttl_ends() {
    let r = Recorder::new();
    let fw = backend(&r, false);
    fw.open(&[hole("10.0.0.1", 22, 1), hole("fd00::1", 443, 60)])
        .await
        .unwrap();
    // A repeated knock extends the pinhole without a second open command.
    fw.open(&[hole("10.0.0.1", 22, 1)]).await.unwrap();
    assert_eq!(
        r.lines(),
        ["open 10.0.0.1 4 tcp 22 1", "open fd00::1 6 tcp 443 60"]
    );
    assert_eq!(fw.count().await.unwrap(), 2);
    let lines = r.wait_for(3).await;
    assert_eq!(lines[2], "close 10.0.0.1 4 tcp 22 0");
    assert_eq!(fw.count().await.unwrap(), 1);
}

#[tokio::test]
async fn extending_moves_the_close_timer() {
    let r = Recorder::new();
    let fw = backend(&r, false);
    fw.open(&[hole("10.0.0.1", 22, 1)]).await.unwrap();
    fw.open(&[hole("10.0.0.1", 22, 3)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.lines().len(), 1, "closed at the old deadline");
    assert_eq!(r.wait_for(2).await[1], "close 10.0.0.1 4 tcp 22 0");
}

#[tokio::test]
async fn close_runs_once_and_shutdown_closes_the_rest() {
    let r = Recorder::new();
    let fw = backend(&r, false);
    fw.open(&[hole("10.0.0.1", 22, 60), hole("10.0.0.2", 22, 60)])
        .await
        .unwrap();
    let key = PinholeKey::new("10.0.0.1".parse().unwrap(), Protocol::Tcp, 22);
    fw.close(key).await.unwrap();
    fw.close(key).await.unwrap();
    fw.shutdown().await.unwrap();
    assert_eq!(
        r.lines()[2..],
        ["close 10.0.0.1 4 tcp 22 0", "close 10.0.0.2 4 tcp 22 0"]
    );
    assert!(matches!(
        fw.open(&[hole("10.0.0.3", 22, 1)]).await,
        Err(Error::ShutDown)
    ));
}

#[tokio::test]
async fn a_failing_open_reports_stderr_and_opens_nothing() {
    let failing = ["sh", "-c", "echo 'quota exceeded' >&2; exit 3"]
        .map(String::from)
        .to_vec();
    let r = Recorder::new();
    let fw = CommandPinholes::new(CommandSettings {
        open: Template::new(failing).unwrap(),
        close: r.template("close", &["{source}"]),
        block: None,
        unblock: None,
        timeout: Duration::from_secs(10),
    });
    match fw.open(&[hole("10.0.0.1", 22, 60)]).await {
        Err(Error::Failed { stderr, .. }) => assert_eq!(stderr, "quota exceeded"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(fw.count().await.unwrap(), 0);
    fw.shutdown().await.unwrap();
    assert!(r.lines().is_empty(), "nothing to close");
}

#[tokio::test]
async fn values_are_arguments_never_shell_text() {
    let r = Recorder::new();
    let marker = r.log.with_file_name("pwned");
    let fw = backend(&r, false);
    let evil = format!("{{source}}; touch {}", marker.display());
    let fw = CommandPinholes::new(CommandSettings {
        open: r.template("open", &[&evil]),
        ..fw.inner.settings.clone()
    });
    fw.open(&[hole("10.0.0.1", 22, 60)]).await.unwrap();
    assert!(!marker.exists());
    assert_eq!(
        r.lines(),
        [format!("open 10.0.0.1; touch {}", marker.display())]
    );
}

#[tokio::test]
async fn blocks_need_a_block_command() {
    let r = Recorder::new();
    let source: IpAddr = "10.0.0.9".parse().unwrap();
    let fw = backend(&r, false);
    assert!(matches!(
        fw.block(source, Duration::from_secs(5)).await,
        Err(Error::Unsupported { .. })
    ));

    let fw = backend(&r, true);
    fw.block(source, Duration::from_secs(1)).await.unwrap();
    assert_eq!(fw.blocked().await.unwrap().len(), 1);
    assert_eq!(
        r.wait_for(2).await,
        ["block 10.0.0.9 4   1", "unblock 10.0.0.9 4   0"]
    );
    fw.block(source, Duration::from_secs(60)).await.unwrap();
    fw.unblock(source).await.unwrap();
    assert_eq!(r.lines().len(), 4);
    assert!(fw.blocked().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_shutdown_during_a_slow_open_still_closes_last() {
    let r = Recorder::new();
    let slow = ["sh", "-c", "sleep 0.3; echo \"$*\" >> \"$0\""]
        .map(String::from)
        .to_vec();
    let mut open = slow;
    open.extend([
        r.log.display().to_string(),
        "open".into(),
        "{source}".into(),
    ]);
    let fw = CommandPinholes::new(CommandSettings {
        open: Template::new(open).unwrap(),
        ..backend(&r, false).inner.settings.clone()
    });
    let opening = tokio::spawn({
        let fw = fw.clone();
        async move { fw.open(&[hole("10.0.0.1", 22, 60)]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    fw.shutdown().await.unwrap();
    opening.await.unwrap().unwrap();
    let lines = r.lines();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("close 10.0.0.1 4 tcp 22 0"),
        "{lines:?}"
    );
    assert!(lines.contains(&"open 10.0.0.1".to_owned()), "{lines:?}");
}
