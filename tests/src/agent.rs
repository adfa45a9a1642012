//! Running tidemark's own binaries from tests: found next to the test
//! executable (`cargo test --workspace` builds them), started with their
//! output captured, stopped with SIGTERM or killed with SIGKILL.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// The package each binary belongs to.
fn package_of(name: &str) -> &str {
    match name {
        "tidemark-agent" => "tidemark-agent",
        _ => "tidemark",
    }
}

/// Whether a variable of the test process came from the user's environment
/// rather than from cargo running the test.
fn inherited_by_cargo(name: &str) -> bool {
    let set_by_cargo_for_tests = name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_")
        || name.starts_with("CARGO_CRATE_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(name, "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR" | "CARGO_RUSTC_CURRENT_DIR")
        || name.starts_with("__CARGO");
    !set_by_cargo_for_tests
}

/// The path of one of the workspace's binaries beside the test executable,
/// brought up to date with cargo first when the tests run under cargo (a
/// test of this package does not make cargo rebuild another's binary).
pub fn binary(name: &str) -> Result<PathBuf> {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default();
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let (Some(cargo), false) = (std::env::var_os("CARGO"), built.iter().any(|b| b == name)) {
        let mut cmd = Command::new(cargo);
        // cargo gives test processes CARGO_PKG_*, OUT_DIR and the like; build
        // scripts that watch such variables would rebuild for a different
        // environment than the outer `cargo test`. Pass on only the user's.
        cmd.env_clear().envs(std::env::vars().filter(|(k, _)| inherited_by_cargo(k)));
        if profile_dir.ends_with("release") {
            cmd.args(["build", "--quiet", "--release", "-p", package_of(name), "--bin", name]);
        } else {
            // The same package set and targets as `cargo test --workspace
            // --all-targets`: the same features, so nothing is rebuilt
            // differently (building one package alone would unify features
            // differently and rebuild half the dependency tree).
            cmd.args(["build", "--quiet", "--workspace", "--all-targets"]);
        }
        crate::process::run(&mut cmd)?;
        built.push(name.to_owned());
    }
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Missing {
            program: name.to_owned(),
            hint: "build the workspace's binaries first: cargo test --workspace --all-targets (or cargo build --workspace)",
        })
    }
}

/// A running tidemark binary whose standard error goes to a file.
pub struct Process {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Process {
    pub fn start(name: &str, args: &[&str], env: &[(&str, String)]) -> Result<Self> {
        let log = tempfile::NamedTempFile::new()?;
        let mut cmd = Command::new(binary(name)?);
        cmd.args(args).stdin(Stdio::null()).stdout(log.reopen()?).stderr(log.reopen()?);
        // Tests run agents side by side: each gets a free metrics port.
        cmd.env("TIDEMARK_METRICS_ADDR", "127.0.0.1:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn { program: name.to_owned(), source })?;
        Ok(Process { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The metrics endpoint the agent logged, once it did.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        let output = self.output();
        let line = output.lines().find(|l| l.contains("metrics endpoint listening"))?;
        let url = line.split("http://").nth(1)?;
        url.split('/').next()?.parse().ok()
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// `Some(status)` once it exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM, timeout)
    }

    /// SIGINT (Ctrl-C), then waits up to `timeout` for a clean exit.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGINT, timeout)
    }

    fn signal(&mut self, signal: libc::c_int, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(pid, signal) };
        }
        self.wait_timeout(timeout)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.kill();
        }
    }
}

/// GETs `path` from an agent's metrics endpoint, sending the request in two
/// pieces as a slow client would; returns the status and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    for piece in [format!("GET {path} HTTP/1.1\r\n"), "Host: x\r\nConnection: close\r\n\r\n".to_owned()] {
        s.write_all(piece.as_bytes())?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let status =
        status.ok_or_else(|| HarnessError::Unexpected { program: format!("GET {path}"), output: out.clone() })?;
    Ok((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// The value of sample `name` (with its labels, if any) in exposition text.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
