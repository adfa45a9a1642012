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
    let tls = super::tls::client_config(params)?;
    let mut config = tokio_postgres::Config::new();
    match &params.host {
        Host::Tcp(host) => config.host(host),
        Host::Unix(dir) => config.host_path(dir),
    };
    config
        .port(params.port)
        .user(&params.user)
        .dbname(&params.dbname)
        .application_name(params.application_name.as_deref().unwrap_or(application_name));
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
    let connect_error = |source| SourceError::Connect { target: params.to_string(), source };
    let client = match tls {
        None => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(connect_error)?;
            tokio::spawn(drive(connection));
            client
        }
        Some(tls) => {
            // tokio-postgres has no "allow": it prefers TLS then.
            config.ssl_mode(match params.sslmode {
                SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
            let (client, connection) = config.connect(connector).await.map_err(connect_error)?;
            tokio::spawn(drive(connection));
            client
        }
    };
    Ok(client)
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::warn!(error = %e, "SQL connection to the source ended");
    }
}
