//! A replication connection (`replication=database`): start-up and
//! authentication (cleartext, MD5, SCRAM-SHA-256) with postgres-protocol's
//! frontend messages, the simple-query commands of the replication
//! protocol, and `START_REPLICATION`, after which the connection becomes a
//! `CopyBoth` stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wal_format::Lsn;

use super::wire::split_frame;
use super::ReplicationError;
use crate::source::conninfo::{ConnParams, Host, SslMode};
use crate::source::tls;

/// What a connection runs over: TCP or a Unix socket (and TLS, later).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Session settings the walsender needs so that pgoutput's text values are
/// the same whatever the server's defaults.
const SESSION_OPTIONS: &str = "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 -c timezone=UTC";

pub struct ReplicationConnection {
    pub(super) io: Box<dyn Transport>,
    pub(super) buf: BytesMut,
    target: String,
    server_version: String,
}

/// `IDENTIFY_SYSTEM`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    pub system_identifier: u64,
    pub timeline: u32,
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// `CREATE_REPLICATION_SLOT`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub name: String,
    pub consistent_point: Lsn,
    /// The exported snapshot, when one was asked for; valid until this
    /// connection runs its next command.
    pub snapshot_name: Option<String>,
}

/// One row of a simple query's result, as text.
pub type Row = Vec<Option<String>>;

impl ReplicationConnection {
    /// Connects (with TLS as `sslmode` says), authenticates, and waits
    /// until the server is ready.
    pub async fn connect(params: &ConnParams, application_name: &str) -> Result<Self, ReplicationError> {
        let tls = tls::client_config(params)?;
        if params.sslmode != SslMode::Allow {
            return Self::connect_with(params, application_name, tls).await;
        }
        // allow: without TLS first, with TLS if the server refuses that.
        match Self::connect_with(params, application_name, None).await {
            Err(e) if e.sqlstate() == Some("28000") && tls.is_some() => {
                Self::connect_with(params, application_name, tls).await
            }
            other => other,
        }
    }

    async fn connect_with(
        params: &ConnParams,
        application_name: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, ReplicationError> {
        let target = params.to_string();
        let timeout = params.connect_timeout.unwrap_or(Duration::from_secs(30));
        let timed_out = || ReplicationError::ConnectTimeout { target: target.clone(), seconds: timeout.as_secs() };
        let io: Box<dyn Transport> = match &params.host {
            Host::Tcp(host) => {
                let connect = tokio::net::TcpStream::connect((host.as_str(), params.port));
                let stream = tokio::time::timeout(timeout, connect)
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|source| ReplicationError::Connect { target: target.clone(), source })?;
                stream
                    .set_nodelay(true)
                    .map_err(|source| ReplicationError::Connect { target: target.clone(), source })?;
                match tls {
                    Some(config) => negotiate_tls(stream, config, host, params.sslmode, &target).await?,
                    None => Box::new(stream),
                }
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", params.port));
                let connect = tokio::net::UnixStream::connect(path);
                let stream = tokio::time::timeout(timeout, connect)
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|source| ReplicationError::Connect { target: target.clone(), source })?;
                Box::new(stream)
            }
        };
        let mut conn = ReplicationConnection {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
            target,
            server_version: String::new(),
        };
        let options = match &params.options {
            Some(user_options) => format!("{SESSION_OPTIONS} {user_options}"),
            None => SESSION_OPTIONS.to_owned(),
        };
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
            ("replication", "database"),
            ("application_name", params.application_name.as_deref().unwrap_or(application_name)),
            ("client_encoding", "UTF8"),
            ("options", options.as_str()),
        ];
        let mut out = BytesMut::new();
        frontend::startup_message(startup.iter().copied(), &mut out).map_err(ReplicationError::Io)?;
        conn.send(&out).await?;
        conn.authenticate(params).await?;
        conn.wait_ready().await?;
        Ok(conn)
    }

    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), ReplicationError> {
        self.io.write_all(bytes).await.map_err(ReplicationError::Io)?;
        self.io.flush().await.map_err(ReplicationError::Io)
    }

    /// Reads one whole backend message (tag, length, body).
    pub(super) async fn read_frame(&mut self) -> Result<BytesMut, ReplicationError> {
        loop {
            if let Some(frame) = split_frame(&mut self.buf)? {
                return Ok(frame);
            }
            if self.io.read_buf(&mut self.buf).await.map_err(ReplicationError::Io)? == 0 {
                return Err(ReplicationError::Closed { target: self.target.clone() });
            }
        }
    }

    /// Reads the next message postgres-protocol knows, turning an
    /// ErrorResponse into an error.
    async fn read_message(&mut self) -> Result<Message, ReplicationError> {
        let mut frame = self.read_frame().await?;
        let tag = frame[0];
        match Message::parse(&mut frame).map_err(ReplicationError::Io)? {
            Some(Message::ErrorResponse(body)) => Err(ReplicationError::from_error_fields(body.fields())),
            Some(message) => Ok(message),
            None => {
                Err(ReplicationError::Protocol { reason: format!("unexpected message type {:?}", char::from(tag)) })
            }
        }
    }

    async fn authenticate(&mut self, params: &ConnParams) -> Result<(), ReplicationError> {
        let target = self.target.clone();
        let password =
            || params.password.clone().ok_or_else(|| ReplicationError::PasswordRequired { target: target.clone() });
        let mut out = BytesMut::new();
        match self.read_message().await? {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password()?.as_bytes(), &mut out).map_err(ReplicationError::Io)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = postgres_protocol::authentication::md5_hash(
                    params.user.as_bytes(),
                    password()?.as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut out).map_err(ReplicationError::Io)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram_offered = false;
                while let Some(m) = fallible_next(&mut mechanisms)? {
                    scram_offered |= m == SCRAM_SHA_256;
                }
                if !scram_offered {
                    return Err(ReplicationError::UnsupportedAuth { method: "SASL without SCRAM-SHA-256".into() });
                }
                return self.scram(password()?).await;
            }
            _ => {
                return Err(ReplicationError::UnsupportedAuth {
                    method: "the server's (GSSAPI, SSPI or Kerberos); use password, md5 or scram-sha-256".into(),
                })
            }
        }
        self.send(&out).await?;
        match self.read_message().await? {
            Message::AuthenticationOk => Ok(()),
            _ => Err(ReplicationError::Protocol { reason: "expected AuthenticationOk".into() }),
        }
    }

    async fn scram(&mut self, password: String) -> Result<(), ReplicationError> {
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut out = BytesMut::new();
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut out).map_err(ReplicationError::Io)?;
        self.send(&out).await?;
        let Message::AuthenticationSaslContinue(body) = self.read_message().await? else {
            return Err(ReplicationError::Protocol { reason: "expected SASL continue".into() });
        };
        scram.update(body.data()).map_err(ReplicationError::Io)?;
        out.clear();
        frontend::sasl_response(scram.message(), &mut out).map_err(ReplicationError::Io)?;
        self.send(&out).await?;
        let Message::AuthenticationSaslFinal(body) = self.read_message().await? else {
            return Err(ReplicationError::Protocol { reason: "expected SASL final".into() });
        };
        scram.finish(body.data()).map_err(ReplicationError::Io)?;
        match self.read_message().await? {
            Message::AuthenticationOk => Ok(()),
            _ => Err(ReplicationError::Protocol { reason: "expected AuthenticationOk after SCRAM".into() }),
        }
    }

    async fn wait_ready(&mut self) -> Result<(), ReplicationError> {
        loop {
            match self.read_message().await? {
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ParameterStatus(p) if p.name().map_err(ReplicationError::Io)? == "server_version" => {
                    self.server_version = p.value().map_err(ReplicationError::Io)?.to_owned();
                }
                _ => {}
            }
        }
    }

    /// Runs one command with the simple query protocol and returns its rows
    /// as text. An error leaves the connection ready for the next command.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, ReplicationError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(ReplicationError::Io)?;
        self.send(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message().await {
                Ok(Message::DataRow(row)) => {
                    let buffer = row.buffer();
                    let mut values = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(range) = fallible_next(&mut ranges)? {
                        values.push(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()));
                    }
                    rows.push(values);
                }
                Ok(Message::ReadyForQuery(_)) => break,
                Ok(_) => {}
                Err(e @ ReplicationError::Server { .. }) => error = Some(e),
                Err(e) => return Err(e),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemInfo, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| ReplicationError::Protocol { reason: "IDENTIFY_SYSTEM returned no row".into() })?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let bad = |what: &str| ReplicationError::Protocol { reason: format!("IDENTIFY_SYSTEM returned a bad {what}") };
        Ok(SystemInfo {
            system_identifier: field(0).parse().map_err(|_| bad("system identifier"))?,
            timeline: field(1).parse().map_err(|_| bad("timeline"))?,
            xlogpos: field(2).parse().map_err(|_| bad("xlogpos"))?,
            dbname: row.get(3).cloned().flatten(),
        })
    }

    /// Creates a logical slot for pgoutput; with `export_snapshot`, its
    /// snapshot is exported for other sessions until this connection's next
    /// command.
    pub async fn create_slot(
        &mut self,
        name: &str,
        temporary: bool,
        export_snapshot: bool,
    ) -> Result<CreatedSlot, ReplicationError> {
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput (SNAPSHOT '{}')",
            quote_ident(name),
            if temporary { "TEMPORARY " } else { "" },
            if export_snapshot { "export" } else { "nothing" }
        );
        let rows = self.simple_query(&sql).await?;
        let row = rows
            .first()
            .ok_or_else(|| ReplicationError::Protocol { reason: "CREATE_REPLICATION_SLOT returned no row".into() })?;
        let field = |i: usize| row.get(i).cloned().flatten();
        Ok(CreatedSlot {
            name: field(0).unwrap_or_default(),
            consistent_point: field(1).and_then(|l| l.parse().ok()).ok_or_else(|| ReplicationError::Protocol {
                reason: "CREATE_REPLICATION_SLOT returned a bad LSN".into(),
            })?,
            snapshot_name: field(2),
        })
    }

    /// Starts streaming the slot's changes from `start` with pgoutput
    /// protocol 1 and logical messages; the connection is now a stream.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
    ) -> Result<Self, ReplicationError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (\"proto_version\" '1', \"publication_names\" {}, \"messages\" 'true')",
            quote_ident(slot),
            quote_literal(publication)
        );
        let mut out = BytesMut::new();
        frontend::query(&sql, &mut out).map_err(ReplicationError::Io)?;
        self.send(&out).await?;
        loop {
            let frame = self.read_frame().await?;
            match frame[0] {
                b'W' => return Ok(self),
                b'E' | b'N' | b'S' => {
                    let mut frame = frame;
                    if let Some(Message::ErrorResponse(body)) =
                        Message::parse(&mut frame).map_err(ReplicationError::Io)?
                    {
                        return Err(ReplicationError::from_error_fields(body.fields()));
                    }
                }
                tag => {
                    return Err(ReplicationError::Protocol {
                        reason: format!("expected CopyBothResponse after START_REPLICATION, got {:?}", char::from(tag)),
                    })
                }
            }
        }
    }

    pub(super) fn into_parts(self) -> (Box<dyn Transport>, BytesMut, String) {
        (self.io, self.buf, self.target)
    }
}

/// Asks the server for TLS (SSLRequest) and, if it agrees, does the
/// handshake; a server that declines is acceptable only when `sslmode`
/// allows a plain connection.
async fn negotiate_tls(
    mut stream: tokio::net::TcpStream,
    config: Arc<rustls::ClientConfig>,
    host: &str,
    sslmode: SslMode,
    target: &str,
) -> Result<Box<dyn Transport>, ReplicationError> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await.map_err(ReplicationError::Io)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(ReplicationError::Io)?;
    match answer[0] {
        b'S' => {
            let name = tls::server_name(host)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(|source| ReplicationError::TlsHandshake { target: target.to_owned(), source })?;
            Ok(Box::new(tls))
        }
        b'N' if sslmode.allows_plain() => Ok(Box::new(stream)),
        b'N' => Err(ReplicationError::TlsRefused { target: target.to_owned(), sslmode: sslmode.as_str() }),
        other => Err(ReplicationError::Protocol { reason: format!("unexpected answer {other:#04x} to SSLRequest") }),
    }
}

fn fallible_next<I: fallible_iterator::FallibleIterator<Error = std::io::Error>>(
    it: &mut I,
) -> Result<Option<I::Item>, ReplicationError> {
    it.next().map_err(ReplicationError::Io)
}

/// Quotes an identifier as PostgreSQL's `quote_ident` does.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal as PostgreSQL's `quote_literal` does.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The payload of a CopyData frame (after the tag and length).
pub(super) fn copy_data_body(frame: BytesMut) -> Bytes {
    frame.freeze().slice(5..)
}
