//! `PgCluster`: a throwaway PostgreSQL 15 cluster with `wal_level=logical`,
//! listening on 127.0.0.1 at a free port and on a socket in its own
//! directory. Dropping it stops the server and removes every file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{
    find_program, free_port, read_log, run, server_command, server_dir, spawn_server, stop_child, wait_until,
};
use crate::{HarnessError, Result};

const PG_BIN_HINT: &str = "install PostgreSQL 15 (apt-get install postgresql-15, or run scripts/install-test-deps.sh) or set TIDEMARK_PG_BIN to its bin directory";

/// A running throwaway cluster, owned by the thread that started it (the
/// server is told to stop if that thread ends).
pub struct PgCluster {
    // Dropped after the server is stopped: see `Drop`.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Child,
}

impl PgCluster {
    /// Starts a cluster with the harness's settings.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a cluster with extra `postgresql.conf` settings, which win over
    /// the harness's.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Self> {
        let bin = pg_bin()?;
        let dir = server_dir("tidemark-pg-")?;
        let data = dir.path().join("data");
        run(server_command(&bin.join("initdb")).args(["-D"]).arg(&data).args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "-A",
            "trust",
            "--no-sync",
        ]))?;
        let mut last_error = None;
        // A free port can be taken by someone else before the server binds it: retry.
        for _ in 0..3 {
            let port = free_port()?;
            write_config(&data, dir.path(), port, settings)?;
            let log = std::fs::File::create(dir.path().join("server.log"))?;
            let mut cmd = server_command(&bin.join("postgres"));
            cmd.arg("-D").arg(&data).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
            // SIGQUIT is PostgreSQL's immediate shutdown.
            let mut child = spawn_server(&mut cmd, libc::SIGQUIT)?;
            match wait_ready(&mut child, &bin, dir.path(), port) {
                Ok(()) => return Ok(PgCluster { dir, bin, port, child }),
                Err(e) => {
                    stop_child(&mut child, libc::SIGQUIT, Duration::from_secs(5));
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| HarnessError::NotReady {
            what: "PostgreSQL".into(),
            seconds: 0,
            log: String::new(),
        }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The PostgreSQL binary directory the cluster runs from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A libpq key/value connection string over TCP to `database`.
    pub fn connection_string(&self, database: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={database}", self.port)
    }

    /// A libpq URL over TCP to `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL in `database` with psql and returns its unaligned output
    /// (`|` between columns, one row per line), trimmed.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let output = run(self.psql_command(database).args(["-A", "-t", "-c", sql]))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// A psql command connected to `database` over the socket, stopping at
    /// the first error; add the arguments.
    pub fn psql_command(&self, database: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", database])
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        cmd
    }

    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")))?;
        Ok(())
    }

    /// Turns TLS on with a certificate for `localhost` signed by a throwaway
    /// CA, and returns the CA certificate's path (for `sslrootcert`).
    pub fn enable_tls(&self) -> Result<PathBuf> {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&dir)?;
        let ca = crate::tls::make_ca(&dir, "ca")?;
        let (cert, key) = crate::tls::make_server_cert(&dir, "ca", "localhost")?;
        if let Some((uid, gid)) = crate::process::server_user() {
            for path in [&cert, &key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
            }
        }
        for setting in [
            format!("ssl_cert_file = '{}'", cert.display()),
            format!("ssl_key_file = '{}'", key.display()),
            "ssl = on".to_owned(),
        ] {
            self.psql("postgres", &format!("ALTER SYSTEM SET {setting}"))?;
        }
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        let ready = crate::process::wait_until(Duration::from_secs(10), || {
            self.psql("postgres", "SHOW ssl").map(|v| v == "on").unwrap_or(false)
        });
        if !ready {
            return Err(HarnessError::NotReady { what: "TLS".into(), seconds: 10, log: self.log() });
        }
        Ok(ca)
    }

    /// Replaces `pg_hba.conf` with `lines` and reloads the configuration.
    pub fn set_hba(&self, lines: &[&str]) -> Result<()> {
        let mut text =
            String::from("# tidemark test harness\nlocal all postgres trust\nlocal replication postgres trust\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(self.data_dir().join("pg_hba.conf"), text)?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Waits until replication slot `slot` exists in `database` and a
    /// walsender streams from it.
    pub fn wait_for_active_slot(&self, database: &str, slot: &str, timeout: Duration) -> Result<()> {
        let sql = format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active");
        if wait_until(timeout, || self.psql(database, &sql).map(|n| n == "1").unwrap_or(false)) {
            Ok(())
        } else {
            Err(HarnessError::NotReady {
                what: format!("replication slot {slot}"),
                seconds: timeout.as_secs(),
                log: self.log(),
            })
        }
    }

    /// The server's log so far (its last lines).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("server.log"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // SIGINT is a fast shutdown: roll back sessions, checkpoint, exit.
        stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(20));
        // `dir` is removed when its TempDir drops, after this.
    }
}

/// Waits until the server accepts connections, or fails with its log if it
/// exits or takes too long.
fn wait_ready(child: &mut Child, bin: &Path, dir: &Path, port: u16) -> Result<()> {
    let timeout = Duration::from_secs(30);
    let ready = wait_until(timeout, || {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        Command::new(bin.join("pg_isready"))
            .args(["-q", "-h"])
            .arg(dir)
            .args(["-p", &port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    if ready && matches!(child.try_wait(), Ok(None)) {
        return Ok(());
    }
    Err(HarnessError::NotReady {
        what: format!("PostgreSQL on port {port}"),
        seconds: timeout.as_secs(),
        log: read_log(&dir.join("server.log")),
    })
}

/// The PostgreSQL 15 binaries: `TIDEMARK_PG_BIN`, Debian's directory, or PATH.
pub fn pg_bin() -> Result<PathBuf> {
    let initdb =
        find_program("initdb", "TIDEMARK_PG_INITDB", &[PathBuf::from("/usr/lib/postgresql/15/bin")], PG_BIN_HINT);
    match std::env::var_os("TIDEMARK_PG_BIN") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(initdb?.parent().map(Path::to_path_buf).unwrap_or_default()),
    }
}

fn write_config(data: &Path, socket_dir: &Path, port: u16, settings: &[(&str, &str)]) -> Result<()> {
    let mut conf = format!(
        "\n# tidemark test harness\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{}'\n\
         wal_level = logical\n\
         max_replication_slots = 20\n\
         max_wal_senders = 20\n\
         max_connections = 60\n\
         shared_buffers = 64MB\n\
         fsync = off\n\
         full_page_writes = off\n\
         log_min_messages = warning\n",
        socket_dir.display()
    );
    for (name, value) in settings {
        conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
    }
    let path = data.join("postgresql.auto.conf");
    let mut existing = std::fs::read_to_string(&path).unwrap_or_default();
    existing.push_str(&conf);
    std::fs::write(&path, existing)?;
    Ok(())
}
