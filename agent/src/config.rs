//! The agent's configuration, from four layers, each overriding the one
//! before: built-in defaults, `tidemark.toml`, `TIDEMARK_*` environment
//! variables, command-line flags. Every setting has one dotted name
//! (`segment.max_age`), its variable is that name in capitals with `_`
//! (`TIDEMARK_SEGMENT_MAX_AGE`), and an invalid value is reported with the
//! name, where it came from, the value and what is allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {setting} {value:?} (from {origin}): expected {allowed}")]
    Invalid { setting: &'static str, origin: Origin, value: String, allowed: &'static str },
    #[error("unknown setting {key:?} in {path}; known settings: {known}")]
    Unknown { key: String, path: PathBuf, known: String },
    #[error("cannot read the configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("no archive given: set archive in tidemark.toml, TIDEMARK_ARCHIVE or --archive (e.g. file:///var/lib/tidemark/archive)")]
    MissingArchive,
}

/// Every setting: dotted name, default (None: unset), what is allowed.
const SETTINGS: &[(&str, Option<&str>, &str)] = &[
    ("source", None, "a libpq connection string or postgresql:// URI"),
    ("archive", None, "file:///absolute/path or s3://bucket/prefix"),
    ("exclude_tables", Some("public.e2e_one_time_keys_json"), "comma-separated schema.table names, or empty"),
    ("schemas", Some("public"), "comma-separated schema names"),
    ("slot", Some("tidemark"), "1 to 63 lower-case letters, digits and underscores"),
    ("publication", Some("tidemark"), "1 to 63 lower-case letters, digits and underscores"),
    ("replica_identity", Some("auto"), "auto or check-only"),
    ("metrics_addr", Some("127.0.0.1:9187"), "an address and port such as 127.0.0.1:9187, or off"),
    ("spill_dir", None, "an absolute directory path"),
    ("spill_max_bytes", Some("1GiB"), "a size from 64MiB to 1TiB, such as 1GiB"),
    ("segment.max_bytes", Some("16MiB"), "a size from 64KiB to 1GiB, such as 16MiB"),
    ("segment.max_age", Some("900ms"), "a duration from 10ms to 10m, such as 500ms or 1s"),
    ("sequences.interval", Some("10s"), "a duration from 1s to 1h, such as 10s"),
    ("s3.endpoint", None, "an http:// or https:// URL, such as http://127.0.0.1:3900"),
    ("s3.region", None, "a region name, such as eu-west-1 or garage"),
    ("s3.path_style", Some("false"), "true or false"),
];

/// How the replica identity guard acts on a table without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// Give it one: primary key, else a suitable unique index, else FULL.
    Auto,
    /// Print the SQL that would, and refuse to publish.
    CheckOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveUrl {
    File(PathBuf),
    /// A bucket and a key prefix without leading or trailing `/`.
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl fmt::Display for ArchiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveUrl::File(p) => write!(f, "file://{}", p.display()),
            ArchiveUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// How to reach an S3 archive beyond its URL; credentials come from the
/// standard AWS chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
}

/// A table as `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The connection string; `None` leaves everything to the `PG*` variables.
    pub source: Option<String>,
    pub archive: ArchiveUrl,
    pub exclude_tables: Vec<TableName>,
    pub schemas: Vec<String>,
    pub slot: String,
    pub publication: String,
    pub replica_identity: IdentityMode,
    pub metrics_addr: Option<SocketAddr>,
    pub spill_dir: PathBuf,
    /// Sealed segments waiting for the store, at most; past it the agent
    /// stops reading the stream.
    pub spill_max_bytes: u64,
    pub segment_max_bytes: u64,
    pub segment_max_age: Duration,
    pub sequence_interval: Duration,
    pub s3: S3Options,
}

/// Values as given, by setting name, with their origin.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Layers {
    /// Sets a value, overriding what an earlier layer gave.
    pub fn set(&mut self, setting: &str, value: impl Into<String>, origin: Origin) {
        if let Some((name, _, _)) = SETTINGS.iter().find(|(n, _, _)| *n == setting) {
            self.values.insert(name, (value.into(), origin));
        }
    }

    /// Adds the settings of a `tidemark.toml`.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::Toml { path: path.into(), message: e.message().to_owned() })?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        for (key, value) in flat {
            if !SETTINGS.iter().any(|(n, _, _)| *n == key) {
                let known = SETTINGS.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(", ");
                return Err(ConfigError::Unknown { key, path: path.into(), known });
            }
            self.set(&key, value, Origin::File(path.into()));
        }
        Ok(())
    }

    /// Adds `TIDEMARK_*` variables from `vars`.
    pub fn add_env<'a>(&mut self, vars: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let vars: BTreeMap<&str, &str> = vars.into_iter().collect();
        for (name, _, _) in SETTINGS {
            let var = env_var(name);
            if let Some(value) = vars.get(var.as_str()) {
                self.set(name, *value, Origin::Env(var));
            }
        }
    }

    pub fn validate(&self) -> Result<Config, ConfigError> {
        let get = |name: &'static str| -> Option<(String, Origin, &'static str)> {
            let (_, default, allowed) = SETTINGS.iter().find(|(n, _, _)| *n == name)?;
            match self.values.get(name) {
                Some((v, o)) => Some((v.clone(), o.clone(), allowed)),
                None => default.map(|d| (d.to_owned(), Origin::Default, *allowed)),
            }
        };
        let invalid = |setting: &'static str, (value, origin, allowed): (String, Origin, &'static str)| {
            ConfigError::Invalid { setting, origin, value, allowed }
        };
        macro_rules! parsed {
            ($name:literal, $parse:expr) => {{
                let given = get($name).expect("the setting has a default");
                match ($parse)(given.0.trim()) {
                    Some(v) => v,
                    None => return Err(invalid($name, given)),
                }
            }};
        }
        let archive = match get("archive") {
            None => return Err(ConfigError::MissingArchive),
            Some(given) => match parse_archive(given.0.trim()) {
                Some(a) => a,
                None => return Err(invalid("archive", given)),
            },
        };
        let metrics_addr = match get("metrics_addr") {
            Some(given) if given.0.trim() == "off" => None,
            Some(given) => Some(given.0.trim().parse().map_err(|_| invalid("metrics_addr", given.clone()))?),
            None => None,
        };
        let spill_dir = match get("spill_dir") {
            None => std::env::temp_dir(),
            Some(given) if Path::new(given.0.trim()).is_absolute() => PathBuf::from(given.0.trim()),
            Some(given) => return Err(invalid("spill_dir", given)),
        };
        Ok(Config {
            source: get("source").map(|g| g.0),
            archive,
            exclude_tables: parsed!("exclude_tables", parse_tables),
            schemas: parsed!("schemas", |s: &str| list(s)
                .into_iter()
                .map(|x| is_identifier(&x).then_some(x))
                .collect::<Option<Vec<_>>>()
                .filter(|v| !v.is_empty())),
            slot: parsed!("slot", |s: &str| is_identifier(s).then(|| s.to_owned())),
            publication: parsed!("publication", |s: &str| is_identifier(s).then(|| s.to_owned())),
            replica_identity: parsed!("replica_identity", |s: &str| match s {
                "auto" => Some(IdentityMode::Auto),
                "check-only" => Some(IdentityMode::CheckOnly),
                _ => None,
            }),
            metrics_addr,
            spill_dir,
            spill_max_bytes: parsed!("spill_max_bytes", |s: &str| parse_size(s)
                .filter(|b| (64 << 20..=1 << 40).contains(b))),
            segment_max_bytes: parsed!("segment.max_bytes", |s: &str| parse_size(s)
                .filter(|b| (64 << 10..=1 << 30).contains(b))),
            segment_max_age: parsed!("segment.max_age", |s: &str| parse_duration(s)
                .filter(|d| (Duration::from_millis(10)..=Duration::from_secs(600)).contains(d))),
            sequence_interval: parsed!("sequences.interval", |s: &str| parse_duration(s)
                .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(d))),
            s3: S3Options {
                endpoint: match get("s3.endpoint") {
                    None => None,
                    Some(g) if g.0.starts_with("http://") || g.0.starts_with("https://") => Some(g.0.trim().to_owned()),
                    Some(g) => return Err(invalid("s3.endpoint", g)),
                },
                region: get("s3.region").map(|g| g.0.trim().to_owned()).filter(|r| !r.is_empty()),
                path_style: parsed!("s3.path_style", |s: &str| match s {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }),
            },
        })
    }
}

/// `segment.max_age` → `TIDEMARK_SEGMENT_MAX_AGE`.
pub fn env_var(setting: &str) -> String {
    format!("TIDEMARK_{}", setting.replace('.', "_").to_uppercase())
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(items) => {
            let joined = items.iter().map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()));
            out.push((prefix.to_owned(), joined.collect::<Vec<_>>().join(",")));
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

/// PostgreSQL's rule for slot names, used for publications too.
fn is_identifier(s: &str) -> bool {
    (1..=63).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_tables(s: &str) -> Option<Vec<TableName>> {
    list(s)
        .into_iter()
        .map(|t| {
            let (schema, name) = t.split_once('.').unwrap_or(("public", &t));
            let ok = |p: &str| !p.is_empty() && !p.contains('.') && !p.contains('"');
            (ok(schema) && ok(name)).then(|| TableName { schema: schema.to_owned(), name: name.to_owned() })
        })
        .collect()
}

fn parse_archive(s: &str) -> Option<ArchiveUrl> {
    if let Some(rest) = s.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        let prefix = prefix.trim_matches('/');
        let prefix_ok = prefix.is_empty() || prefix.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
        return (bucket_ok && prefix_ok)
            .then(|| ArchiveUrl::S3 { bucket: bucket.to_owned(), prefix: prefix.to_owned() });
    }
    let path = s.strip_prefix("file://")?;
    let path = Path::new(path);
    path.is_absolute().then(|| ArchiveUrl::File(path.to_path_buf()))
}

/// `500ms`, `1s`, `1.5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// `16MiB`, `512KiB`, `1GiB`, `16MB`, or a number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(file: Option<&str>, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut l = Layers::default();
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = file {
            let path = dir.path().join("tidemark.toml");
            std::fs::write(&path, text).unwrap();
            l.add_file(&path)?;
        }
        l.add_env(env.iter().copied());
        for (k, v) in flags {
            l.set(k, *v, Origin::Flag(format!("--{k}")));
        }
        l.validate()
    }

    #[test]
    fn defaults_need_only_an_archive() {
        let c = layers(None, &[("TIDEMARK_ARCHIVE", "file:///var/lib/tidemark")], &[]).unwrap();
        assert_eq!(c.archive, ArchiveUrl::File("/var/lib/tidemark".into()));
        assert_eq!(c.exclude_tables, [TableName { schema: "public".into(), name: "e2e_one_time_keys_json".into() }]);
        assert_eq!((c.slot.as_str(), c.publication.as_str()), ("tidemark", "tidemark"));
        assert_eq!((c.segment_max_age, c.segment_max_bytes), (Duration::from_millis(900), 16 << 20));
        assert_eq!(c.replica_identity, IdentityMode::Auto);
        assert!(matches!(layers(None, &[], &[]), Err(ConfigError::MissingArchive)));
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_file() {
        let file = r#"
            archive = "file:///from/file"
            slot = "from_file"
            exclude_tables = ["public.e2e_one_time_keys_json", "other.secrets"]
            [segment]
            max_age = "250ms"
            max_bytes = 1048576
        "#;
        let c = layers(
            Some(file),
            &[("TIDEMARK_SLOT", "from_env"), ("TIDEMARK_ARCHIVE", "file:///from/env")],
            &[("archive", "file:///from/flag")],
        )
        .unwrap();
        assert_eq!(c.archive, ArchiveUrl::File("/from/flag".into()));
        assert_eq!(c.slot, "from_env");
        assert_eq!(c.segment_max_age, Duration::from_millis(250));
        assert_eq!(c.segment_max_bytes, 1 << 20);
        assert_eq!(c.exclude_tables[1].to_string(), "other.secrets");
        let none = layers(None, &[("TIDEMARK_ARCHIVE", "file:///a"), ("TIDEMARK_EXCLUDE_TABLES", "")], &[]).unwrap();
        assert!(none.exclude_tables.is_empty(), "an empty list excludes nothing");
    }

    #[test]
    fn invalid_values_name_the_setting_its_origin_and_what_is_allowed() {
        let err =
            layers(None, &[("TIDEMARK_ARCHIVE", "file:///a"), ("TIDEMARK_SEGMENT_MAX_AGE", "soon")], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid segment.max_age \"soon\" (from environment variable TIDEMARK_SEGMENT_MAX_AGE): expected a duration from 10ms to 10m, such as 500ms or 1s"
        );
        for (setting, value) in [
            ("archive", "/no/scheme"),
            ("archive", "file://relative"),
            ("slot", "Tidemark"),
            ("replica_identity", "sometimes"),
            ("segment.max_bytes", "1KiB"),
            ("metrics_addr", "localhost"),
            ("exclude_tables", "a.b.c"),
            ("schemas", ""),
        ] {
            let mut flags = vec![("archive", "file:///a")];
            flags.push((setting, value));
            let err = layers(None, &[], &flags).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { setting: s, .. } if *s == setting),
                "{setting}={value}: {err}"
            );
        }
    }

    #[test]
    fn s3_archives_take_a_bucket_a_prefix_and_options() {
        let c = layers(
            None,
            &[
                ("TIDEMARK_S3_ENDPOINT", "http://127.0.0.1:3900"),
                ("TIDEMARK_S3_PATH_STYLE", "true"),
                ("TIDEMARK_S3_REGION", "garage"),
            ],
            &[("archive", "s3://tidemark-test/archives/synapse/")],
        )
        .unwrap();
        assert_eq!(c.archive, ArchiveUrl::S3 { bucket: "tidemark-test".into(), prefix: "archives/synapse".into() });
        assert_eq!(
            c.s3,
            S3Options {
                endpoint: Some("http://127.0.0.1:3900".into()),
                region: Some("garage".into()),
                path_style: true
            }
        );
        for bad in ["s3://", "s3://UPPER/x", "s3://b/x//y", "s3://ab"] {
            assert!(layers(None, &[], &[("archive", bad)]).is_err(), "{bad} accepted");
        }
        let err = layers(None, &[("TIDEMARK_S3_PATH_STYLE", "yes")], &[("archive", "s3://bucket")]).unwrap_err();
        assert!(err.to_string().contains("s3.path_style"), "{err}");
    }

    #[test]
    fn unknown_file_settings_are_refused_by_name() {
        let err = layers(Some("archive = \"file:///a\"\n[segment]\nmax_agee = \"1s\"\n"), &[], &[]).unwrap_err();
        assert!(err.to_string().contains("unknown setting \"segment.max_agee\""), "{err}");
        let err = layers(Some("archive = "), &[], &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Toml { .. }), "{err}");
    }

    #[test]
    fn sizes_and_durations_parse_like_an_operator_writes_them() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("16MB"), Some(16_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), None, "a unit is required");
    }
}
