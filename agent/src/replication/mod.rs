//! The replication connection of DESIGN.md: tokio-postgres cannot open one,
//! so this is a small client on `tokio::net` with postgres-protocol for
//! start-up, authentication and frontend messages. Backend messages are
//! framed here (postgres-protocol does not know CopyBothResponse `W`).

mod connection;
mod stream;
pub mod wire;

pub use connection::{quote_ident, quote_literal, CreatedSlot, ReplicationConnection, Row, SystemInfo};
pub use stream::{spawn, StreamEvent, StreamHandle};

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot connect to PostgreSQL at {target}: {source}; check that the server runs and the host, port or socket directory are right")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from PostgreSQL at {target} within {seconds} s; check the host and any firewall")]
    ConnectTimeout { target: String, seconds: u64 },
    #[error("PostgreSQL at {target} asks for a password and none was given: set it in the connection string, PGPASSWORD or ~/.pgpass")]
    PasswordRequired { target: String },
    #[error("PostgreSQL asks for an authentication method tidemark does not speak: {method}")]
    UnsupportedAuth { method: String },
    #[error(transparent)]
    Tls(#[from] crate::source::tls::TlsError),
    #[error("PostgreSQL at {target} does not offer TLS, and sslmode={sslmode} requires it; enable ssl on the server or lower sslmode")]
    TlsRefused { target: String, sslmode: &'static str },
    #[error("TLS handshake with PostgreSQL at {target} failed; check the server's certificate against sslrootcert and the host name")]
    TlsHandshake {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("PostgreSQL: {message} (SQLSTATE {code}){}{}", detail.as_ref().map(|d| format!("; {d}")).unwrap_or_default(), hint.as_ref().map(|h| format!("; hint: {h}")).unwrap_or_default())]
    Server { code: String, message: String, detail: Option<String>, hint: Option<String> },
    #[error("PostgreSQL at {target} closed the connection")]
    Closed { target: String },
    #[error("unexpected reply from PostgreSQL: {reason}")]
    Protocol { reason: String },
    #[error("malformed replication stream")]
    Wire(#[from] wire::WireError),
    #[error("replication connection I/O failed")]
    Io(#[source] std::io::Error),
}

impl ReplicationError {
    fn from_error_fields(mut fields: postgres_protocol::message::backend::ErrorFields<'_>) -> Self {
        use fallible_iterator::FallibleIterator;
        let (mut code, mut message, mut detail, mut hint) = (String::new(), String::new(), None, None);
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'C' => code = value,
                b'M' => message = value,
                b'D' => detail = Some(value),
                b'H' => hint = Some(value),
                _ => {}
            }
        }
        ReplicationError::Server { code, message, detail, hint }
    }

    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}
