//! Connection parameters as libpq reads them: a connection string (key/value
//! or `postgresql://` URI), then the `PG*` environment variables, then
//! libpq's defaults; passwords from `PGPASSWORD` or the password file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a connection string or variable cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    #[error("invalid connection string: {reason} (expected key=value pairs like \"host=/var/run/postgresql dbname=synapse\", or a postgresql:// URI)")]
    Syntax { reason: String },
    #[error("unknown connection option {key:?}")]
    UnknownKey { key: String },
    #[error("invalid value {value:?} for connection option {key}: expected {allowed}")]
    InvalidValue { key: String, value: String, allowed: &'static str },
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Where the server is: a TCP host or a Unix socket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Everything needed to connect, with libpq's defaults applied.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnParams {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
    /// Command-line options sent to the server (`-c name=value ...`).
    pub options: Option<String>,
    /// The home directory, where libpq looks for `~/.postgresql/root.crt`
    /// and the client certificate.
    pub home: Option<PathBuf>,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ConnParams {
    /// The target without secrets, for messages: `user@host:port/dbname`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}

/// The keys tidemark understands, as libpq names them, with the variables
/// that supply them when the connection string does not.
const KEYS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("dbname", "PGDATABASE"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("application_name", "PGAPPNAME"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("options", "PGOPTIONS"),
];

/// Key/value settings as written, before defaults.
pub type Settings = BTreeMap<String, String>;

/// Parses a libpq connection string: `key=value` pairs (values may be
/// single-quoted, with `\'` and `\\` escapes) or a `postgresql://` URI.
pub fn parse(conninfo: &str) -> Result<Settings, ConnInfoError> {
    let trimmed = conninfo.trim();
    let settings = if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
        parse_uri(trimmed)?
    } else {
        parse_key_values(trimmed)?
    };
    for key in settings.keys() {
        if !KEYS.iter().any(|(k, _)| k == key) {
            return Err(ConnInfoError::UnknownKey { key: key.clone() });
        }
    }
    Ok(settings)
}

fn parse_key_values(s: &str) -> Result<Settings, ConnInfoError> {
    let syntax = |reason: &str| ConnInfoError::Syntax { reason: reason.to_owned() };
    let mut out = Settings::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(syntax(&format!("missing \"=\" after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(syntax(&format!("unterminated quoted value for {key:?}"))),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or_else(|| syntax("a backslash ends the string"))?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(if c == '\\' {
                    chars.next().ok_or_else(|| syntax("a backslash ends the string"))?
                } else {
                    c
                });
            }
        }
        out.insert(key, value);
    }
}

fn percent_decode(s: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| ConnInfoError::Syntax { reason: format!("bad percent-encoding in {s:?}") })?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnInfoError::Syntax { reason: format!("{s:?} is not UTF-8") })
}

/// `postgresql://[user[:password]@][host][:port][/dbname][?key=value&...]`
fn parse_uri(s: &str) -> Result<Settings, ConnInfoError> {
    let rest = s.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut out = Settings::new();
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if !user.is_empty() {
                out.insert("user".into(), percent_decode(user)?);
            }
            if userinfo.contains(':') {
                out.insert("password".into(), percent_decode(password)?);
            }
            hostport
        }
        None => authority,
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (h, after) = bracketed
            .split_once(']')
            .ok_or_else(|| ConnInfoError::Syntax { reason: "unterminated [ in the host".into() })?;
        (h, after.strip_prefix(':').unwrap_or(""))
    } else {
        hostport.split_once(':').unwrap_or((hostport, ""))
    };
    if !host.is_empty() {
        out.insert("host".into(), percent_decode(host)?);
    }
    if !port.is_empty() {
        out.insert("port".into(), port.to_owned());
    }
    if !path.is_empty() {
        out.insert("dbname".into(), percent_decode(path)?);
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| ConnInfoError::Syntax { reason: format!("query parameter {pair:?} has no value") })?;
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

/// The environment libpq reads: the `PG*` variables, `HOME` and the OS user.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: BTreeMap<String, String>,
    pub os_user: String,
    pub home: Option<PathBuf>,
}

impl Environment {
    /// This process's environment.
    pub fn current() -> Self {
        let vars = std::env::vars().filter(|(k, _)| k.starts_with("PG")).collect();
        let os_user = current_os_user();
        Environment { vars, os_user, home: std::env::var_os("HOME").map(PathBuf::from) }
    }
}

fn current_os_user() -> String {
    // SAFETY: getpwuid returns NULL or a pointer to a record valid until the
    // next call; it is read at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() {
            return std::env::var("USER").unwrap_or_default();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}

/// Resolves a connection string against the environment as libpq does:
/// the string wins, then `PG*` variables, then defaults (the Unix socket in
/// `/var/run/postgresql`, port 5432, the OS user, a database named after the
/// user); the password comes from the string, `PGPASSWORD`, or the password
/// file (`passfile`, `PGPASSFILE`, `~/.pgpass`).
pub fn resolve(conninfo: Option<&str>, env: &Environment) -> Result<ConnParams, ConnInfoError> {
    let mut settings = match conninfo {
        Some(s) => parse(s)?,
        None => Settings::new(),
    };
    for (key, var) in KEYS {
        if !settings.contains_key(*key) {
            if let Some(value) = env.vars.get(*var) {
                settings.insert((*key).to_owned(), value.clone());
            }
        }
    }
    let get = |k: &str| settings.get(k).filter(|v| !v.is_empty()).cloned();
    let invalid = |key: &str, allowed| ConnInfoError::InvalidValue {
        key: key.to_owned(),
        value: settings.get(key).cloned().unwrap_or_default(),
        allowed,
    };
    let host = match get("hostaddr").or_else(|| get("host")) {
        Some(h) if h.contains(',') => return Err(invalid("host", "a single host (tidemark does not try several)")),
        Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
        Some(h) => Host::Tcp(h),
        None => Host::Unix(PathBuf::from("/var/run/postgresql")),
    };
    let port = match get("port") {
        Some(p) => p.parse().ok().filter(|p| *p > 0).ok_or_else(|| invalid("port", "a TCP port from 1 to 65535"))?,
        None => 5432,
    };
    let user = get("user").unwrap_or_else(|| env.os_user.clone());
    let dbname = get("dbname").unwrap_or_else(|| user.clone());
    let sslmode = match get("sslmode") {
        Some(m) => SslMode::parse(&m)
            .ok_or_else(|| invalid("sslmode", "disable, allow, prefer, require, verify-ca or verify-full"))?,
        None => SslMode::Prefer,
    };
    let connect_timeout = match get("connect_timeout") {
        Some(t) => match t.parse::<u64>() {
            Ok(0) => None,
            Ok(secs) => Some(Duration::from_secs(secs.max(2))),
            Err(_) => return Err(invalid("connect_timeout", "a number of seconds")),
        },
        None => None,
    };
    let mut params = ConnParams {
        host,
        port,
        user,
        password: get("password"),
        dbname,
        sslmode,
        sslrootcert: get("sslrootcert").map(PathBuf::from),
        sslcert: get("sslcert").map(PathBuf::from),
        sslkey: get("sslkey").map(PathBuf::from),
        application_name: get("application_name"),
        connect_timeout,
        options: get("options"),
        home: env.home.clone(),
    };
    if params.password.is_none() {
        let passfile = get("passfile").map(PathBuf::from).or_else(|| env.home.as_ref().map(|h| h.join(".pgpass")));
        if let Some(path) = passfile {
            params.password = password_from_file(&path, &params);
        }
    }
    Ok(params)
}

/// Looks the connection up in a password file (`host:port:db:user:password`
/// lines, `*` matching anything, `\` escaping `:` and `\`). Like libpq, a
/// file that others can read is ignored.
fn password_from_file(path: &Path, params: &ConnParams) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "password file has group or world access; ignored (chmod 0600 it)");
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let host = match &params.host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "localhost".to_owned(),
    };
    let wanted = [host, params.port.to_string(), params.dbname.clone(), params.user.clone()];
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let fields = split_passfile_line(line);
        if fields.len() != 5 {
            return None;
        }
        let matches = fields[..4].iter().zip(&wanted).all(|(f, w)| f == "*" || f == w);
        matches.then(|| fields[4].clone())
    })
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Environment {
        Environment {
            vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            os_user: "matrix".into(),
            home: None,
        }
    }

    #[test]
    fn defaults_are_libpqs() {
        let p = resolve(None, &env(&[])).unwrap();
        assert_eq!(p.host, Host::Unix("/var/run/postgresql".into()));
        assert_eq!((p.port, p.user.as_str(), p.dbname.as_str()), (5432, "matrix", "matrix"));
        assert_eq!(p.sslmode, SslMode::Prefer);
    }

    #[test]
    fn the_connection_string_wins_over_the_environment() {
        let e = env(&[("PGHOST", "db.internal"), ("PGUSER", "envuser"), ("PGPORT", "6543"), ("PGDATABASE", "envdb")]);
        let p = resolve(Some("user=synapse dbname='my db' password='it\\'s'"), &e).unwrap();
        assert_eq!(p.host, Host::Tcp("db.internal".into()));
        assert_eq!((p.port, p.user.as_str(), p.dbname.as_str()), (6543, "synapse", "my db"));
        assert_eq!(p.password.as_deref(), Some("it's"));
    }

    #[test]
    fn uris_are_understood() {
        let p = resolve(
            Some("postgresql://syn%40apse:s3cr%3At@[::1]:5433/synapse?sslmode=verify-full&application_name=tm"),
            &env(&[]),
        )
        .unwrap();
        assert_eq!((p.user.as_str(), p.password.as_deref()), ("syn@apse", Some("s3cr:t")));
        assert_eq!((p.host.clone(), p.port), (Host::Tcp("::1".into()), 5433));
        assert_eq!((p.dbname.as_str(), p.sslmode), ("synapse", SslMode::VerifyFull));
        assert_eq!(p.application_name.as_deref(), Some("tm"));
        let p = resolve(Some("postgresql:///synapse?host=/run/pg"), &env(&[])).unwrap();
        assert_eq!((p.host, p.dbname.as_str()), (Host::Unix("/run/pg".into()), "synapse"));
    }

    #[test]
    fn bad_settings_name_the_option_and_what_is_allowed() {
        let e = env(&[]);
        let err = resolve(Some("sslmode=sometimes"), &e).unwrap_err();
        assert_eq!(err.to_string(), "invalid value \"sometimes\" for connection option sslmode: expected disable, allow, prefer, require, verify-ca or verify-full");
        assert!(matches!(resolve(Some("port=http"), &e), Err(ConnInfoError::InvalidValue { .. })));
        assert!(matches!(resolve(Some("colour=blue"), &e), Err(ConnInfoError::UnknownKey { .. })));
        assert!(matches!(resolve(Some("host"), &e), Err(ConnInfoError::Syntax { .. })));
        assert!(matches!(resolve(Some("password='open"), &e), Err(ConnInfoError::Syntax { .. })));
        let err = resolve(None, &env(&[("PGPORT", "0")])).unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn passwords_come_from_a_private_password_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "# comment\nother:5432:*:*:wrong\ndb.internal:*:synapse:syn:pa\\:ss\n*:*:*:*:fallback\n")
            .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = env(&[("PGPASSFILE", file.to_str().unwrap())]);
        let p = resolve(Some("host=db.internal user=syn dbname=synapse"), &e).unwrap();
        assert_eq!(p.password.as_deref(), Some("pa:ss"));
        let p = resolve(Some("host=elsewhere user=x"), &e).unwrap();
        assert_eq!(p.password.as_deref(), Some("fallback"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(resolve(Some("host=elsewhere"), &e).unwrap().password, None, "a readable password file is ignored");
        let p = resolve(Some("host=elsewhere password=given"), &e).unwrap();
        assert_eq!(p.password.as_deref(), Some("given"));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let p = resolve(Some("password=hunter2"), &env(&[])).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!p.to_string().contains("hunter2"));
    }
}
