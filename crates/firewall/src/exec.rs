//! Running an external program (nft, a cloud CLI) as an argv vector: never
//! through a shell, so nothing in an argument can become a command.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::Error;

/// Most stderr kept in an error; nft can echo a whole batch back.
const MAX_STDERR: usize = 4096;

/// Runs `argv` with `stdin` fed to it, killed after `timeout`. Returns
/// stdout on success, or an error carrying the status and stderr.
pub(crate) async fn run(
    argv: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Invalid("empty command".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timed-out or cancelled call must not leave the program running.
        .kill_on_drop(true);
    let spawn_err = |source| Error::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let pipe = child.stdin.take();
    let feed = async move {
        if let (Some(input), Some(mut pipe)) = (stdin, pipe) {
            // Dropping the pipe afterwards gives the program its EOF; a
            // write error means it exited early, which its status reports.
            let _ = pipe.write_all(input).await;
        }
    };
    // Feed stdin while collecting output, so neither side can fill a pipe
    // and wait on the other forever.
    let run = async { tokio::join!(feed, child.wait_with_output()).1 };
    let output = match tokio::time::timeout(timeout, run).await {
        Ok(result) => result.map_err(spawn_err)?,
        Err(_) => {
            return Err(Error::Timeout {
                program: program.clone(),
                after: timeout,
            });
        }
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if stderr.len() > MAX_STDERR {
        let cut = (0..=MAX_STDERR)
            .rev()
            .find(|i| stderr.is_char_boundary(*i))
            .unwrap_or(0);
        stderr.truncate(cut);
        stderr.push('…');
    }
    Err(Error::Failed {
        program: argv.join(" "),
        status: output.status.to_string(),
        stderr,
    })
}
