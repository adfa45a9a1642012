//! Ordinary SQL connections to the source (setup, sequences, lag queries),
//! with upstream tokio-postgres, from the same libpq parameters as the
//! replication connection.

use super::conninfo::{ConnParams, Host, SslMode};
use super::SourceError;

/// Session settings every tidemark connection uses, so that values print
/// the same whatever the server's defaults.
pub const SESSION_OPTIONS: &str = "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 -c timezone=UTC";

/// Connects and drives the connection on its own task.
pub async fn connect(params: &ConnParams, application_name: &str) -> Result<tokio_postgres::Client, SourceError> {
    if matches!(params.sslmode, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
        && matches!(params.host, Host::Tcp(_))
    {
        return Err(SourceError::TlsUnsupported { target: params.to_string() });
    }
    let mut config = tokio_postgres::Config::new();
    match &params.host {
        Host::Tcp(host) => config.host(host),
        Host::Unix(dir) => config.host_path(dir),
    };
    config
        .port(params.port)
        .user(&params.user)
        .dbname(&params.dbname)
        .application_name(params.application_name.as_deref().unwrap_or(application_name))
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    config.options(&match &params.options {
        Some(user) => format!("{SESSION_OPTIONS} {user}"),
        None => SESSION_OPTIONS.to_owned(),
    });
    if let Some(password) = &params.password {
        config.password(password);
    }
    if let Some(timeout) = params.connect_timeout {
        config.connect_timeout(timeout);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|source| SourceError::Connect { target: params.to_string(), source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "SQL connection to the source ended");
        }
    });
    Ok(client)
}
