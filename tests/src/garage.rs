//! `Garage`: a single-node Garage S3 server on loopback with one bucket and
//! one access key, as a user's S3, MinIO or R2 would be set up. Dropping it
//! stops the server and removes its data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{find_program, free_port, read_log, run, spawn_server, stop_child, wait_until};
use crate::{HarnessError, Result};

const GARAGE_HINT: &str = "run scripts/install-test-deps.sh (cargo install garage --locked --version 2.5.0 --no-default-features --features bundled-libs,sqlite) or set TIDEMARK_GARAGE_BIN";

pub struct Garage {
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Child,
    s3_port: u16,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Garage {
    pub const REGION: &'static str = "garage";

    /// Starts a node, gives it a layout, and creates bucket `tidemark-test`
    /// with a key that may read, write and own it.
    pub fn start() -> Result<Self> {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let bin = find_program("garage", "TIDEMARK_GARAGE_BIN", &[home.join(".cargo/bin")], GARAGE_HINT)?;
        let dir = tempfile::Builder::new().prefix("tidemark-garage-").tempdir_in("/tmp")?;
        let (rpc_port, s3_port, admin_port) = (free_port()?, free_port()?, free_port()?);
        let secret = random_hex(32)?;
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\n\
                 data_dir = \"{d}/data\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{region}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                d = dir.path().display(),
                region = Self::REGION,
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("garage.log"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-c").arg(&config).arg("server").stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = spawn_server(&mut cmd, libc::SIGKILL)?;
        let mut garage = Garage {
            dir,
            bin,
            child,
            s3_port,
            bucket: "tidemark-test".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        garage.configure()?;
        Ok(garage)
    }

    /// Stops the server, keeping its data: the store is unreachable.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, libc::SIGKILL, Duration::from_secs(5));
    }

    /// Starts the stopped server again on the same ports with the same data.
    pub fn restart(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().append(true).open(self.dir.path().join("garage.log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = spawn_server(&mut cmd, libc::SIGKILL)?;
        let port = self.s3_port;
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && self.cli(&["status"]).is_ok()
        });
        if up {
            Ok(())
        } else {
            Err(HarnessError::NotReady { what: "Garage after a restart".into(), seconds: 30, log: self.log() })
        }
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        let output = run(Command::new(&self.bin).arg("-c").arg(self.dir.path().join("garage.toml")).args(args))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn configure(&mut self) -> Result<()> {
        let timeout = Duration::from_secs(30);
        let mut node = None;
        let up = wait_until(timeout, || {
            node = self.cli(&["node", "id", "-q"]).ok();
            node.is_some() || matches!(self.child.try_wait(), Ok(Some(_)))
        });
        let node = match (up, node) {
            (true, Some(node)) => node,
            _ => {
                return Err(HarnessError::NotReady {
                    what: "Garage".into(),
                    seconds: timeout.as_secs(),
                    log: read_log(&self.dir.path().join("garage.log")),
                })
            }
        };
        let node_id = node.trim().split('@').next().unwrap_or_default().to_owned();
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node_id])?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        let key = self.cli(&["key", "create", "tidemark-test"])?;
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                .ok_or_else(|| HarnessError::Unexpected { program: "garage key create".into(), output: key.clone() })
        };
        self.access_key_id = field("Key ID:")?;
        self.secret_access_key = field("Secret key:")?;
        let bucket = self.bucket.clone();
        self.cli(&["bucket", "create", &bucket])?;
        self.cli(&["bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", "tidemark-test"])?;
        let port = self.s3_port;
        if !wait_until(timeout, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            return Err(HarnessError::NotReady {
                what: "Garage's S3 API".into(),
                seconds: timeout.as_secs(),
                log: read_log(&self.dir.path().join("garage.log")),
            });
        }
        Ok(())
    }

    /// The S3 endpoint URL (path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The variables of the standard AWS credential chain and tidemark's S3
    /// settings, for a child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", Self::REGION.to_owned()),
            ("TIDEMARK_S3_ENDPOINT", self.endpoint()),
            ("TIDEMARK_S3_REGION", Self::REGION.to_owned()),
            ("TIDEMARK_S3_PATH_STYLE", "true".to_owned()),
        ]
    }

    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("garage.log"))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(10));
    }
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
