//! Child processes for the harness: free loopback ports, running a command
//! as the `postgres` OS user when the tests run as root, servers that die
//! with the thread that started them, and polling with a deadline.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// What can go wrong while starting or using a test server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{program} not found: {hint}")]
    Missing { program: String, hint: &'static str },
    #[error("could not run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed { program: String, status: String, stderr: String },
    #[error("{what} not ready after {seconds} s; its log:\n{log}")]
    NotReady { what: String, seconds: u64, log: String },
    #[error("unexpected output from {program}: {output}")]
    Unexpected { program: String, output: String },
    #[error("harness I/O failed")]
    Io(#[from] std::io::Error),
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The OS user and group servers run as: `postgres` when we are root
/// (initdb refuses root), else ourselves.
pub fn server_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns NULL or a pointer to static storage, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// A private temporary directory the server user owns.
pub fn server_dir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?;
    if let Some((uid, gid)) = server_user() {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
    }
    Ok(dir)
}

/// A command that runs as the server user.
pub fn server_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Runs a command to completion; a non-zero exit is an error with its stderr.
pub fn run(cmd: &mut Command) -> crate::Result<Output> {
    let program = format!("{:?}", cmd.get_program());
    let output = cmd.output().map_err(|source| HarnessError::Spawn { program: program.clone(), source })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(HarnessError::Failed {
            program,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Starts a long-running server that receives `signal` if the thread that
/// started it ends, so that an aborted test run leaves nothing behind.
pub fn spawn_server(cmd: &mut Command, signal: libc::c_int) -> crate::Result<Child> {
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = format!("{:?}", cmd.get_program());
    cmd.spawn().map_err(|source| HarnessError::Spawn { program, source })
}

/// Sends `signal` and waits up to `grace` for the child to exit, then kills it.
pub fn stop_child(child: &mut Child, signal: libc::c_int, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(pid, signal) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `ready` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finds a program: an explicit override, then each candidate directory,
/// then `PATH`.
pub fn find_program(name: &str, env_override: &str, dirs: &[PathBuf], hint: &'static str) -> crate::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_override) {
        return Ok(PathBuf::from(path));
    }
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| HarnessError::Missing { program: name.to_owned(), hint })
}

pub fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
