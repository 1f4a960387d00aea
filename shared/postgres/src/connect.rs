//! Connections: a pool over TLS when the URL asks for it (`sslmode=require`), the server's
//! certificate always verified (chain and host name) against Mozilla's roots and any extra
//! ones given, and, for IAM authentication, a password made afresh for every new
//! connection (an RDS IAM token lives 15 minutes; a connection outlives it, which is fine:
//! the token is checked only when connecting).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::future::BoxFuture;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections one process keeps: a Lambda handles one batch at a time, and RDS Proxy (or
/// Aurora's own limit) shares them between instances.
pub const POOL_SIZE: usize = 4;

/// How long making a connection (TCP, TLS, sign-in) may take, and how long a caller waits for
/// a free one, unless the options say otherwise: a proxy or cluster that does not answer (a
/// failover, a scaling pause, a network rule) is an error well inside any function's time,
/// not a function killed at its timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("not a PostgreSQL URL ({0}): give postgres://user@host:port/database")]
    Url(String),
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    #[error("a password made per connection (IAM authentication) is sent only over TLS: add sslmode=require to the URL")]
    TokenWithoutTls,
    #[error("an extra root certificate cannot be used: {0}")]
    Roots(String),
}

/// Where a new connection's password comes from (an IAM token signer on AWS).
pub trait PasswordSource: Send + Sync + 'static {
    /// The password for `user` at `host:port`, made now.
    fn password<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        user: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// How to connect, beyond what the URL says.
#[derive(Default, Clone)]
pub struct ConnectOptions {
    /// PEM certificates trusted besides Mozilla's (for example the RDS CA bundle when
    /// connecting to Aurora directly; RDS Proxy presents certificates under Amazon's roots).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// A password made per connection instead of the URL's.
    pub password: Option<Arc<dyn PasswordSource>>,
    /// Instead of [`CONNECT_TIMEOUT`].
    pub connect_timeout: Option<Duration>,
}

/// A pool of connections to `url` (`postgres://user[:password]@host[:port]/database`).
/// Connections are made when first used.
pub fn pool(url: &str) -> Result<Pool, ConnectError> {
    pool_with(url, ConnectOptions::default())
}

/// [`pool`] with [`ConnectOptions`].
pub fn pool_with(url: &str, options: ConnectOptions) -> Result<Pool, ConnectError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectError::Url(e.to_string()))?;
    let timeout = options.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(timeout);
    }
    if options.password.is_some() && config.get_ssl_mode() != SslMode::Require {
        return Err(ConnectError::TokenWithoutTls);
    }
    let tls = match config.get_ssl_mode() {
        // No roots are parsed for a server that is never asked for TLS.
        SslMode::Disable => MakeRustlsConnect::new(client_config(RootCertStore::empty())),
        _ => MakeRustlsConnect::new(client_config(roots(options.extra_roots_pem.as_deref())?)),
    };
    let connect = Connector {
        tls,
        password: options.password,
    };
    let manager = Manager::from_connect(
        config,
        connect,
        ManagerConfig {
            // A connection that died (a failover, a proxy's idle timeout) is found before use.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        // The TCP connect is bounded by the driver; TLS and sign-in by this.
        .create_timeout(Some(timeout))
        .wait_timeout(Some(timeout))
        .build()
        .map_err(|e| ConnectError::Pool(e.to_string()))
}

/// An error with its causes (the driver's own message is often only "db error" or "error
/// performing TLS handshake"; the cause says which).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        cause = c.source();
    }
    text
}

fn client_config(roots: RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Mozilla's roots, compiled in as trust anchors (as the SDK's clients trust them: see
/// `timeline_aws::https_client`), and the extra ones.
fn roots(extra_pem: Option<&[u8]>) -> Result<RootCertStore, ConnectError> {
    let mut store = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ConnectError::Roots(e.to_string()))?;
            store
                .add(cert)
                .map_err(|e| ConnectError::Roots(e.to_string()))?;
        }
    }
    Ok(store)
}

struct Connector {
    tls: MakeRustlsConnect,
    password: Option<Arc<dyn PasswordSource>>,
}

impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        let mut config = config.clone();
        Box::pin(async move {
            if let Some(source) = &self.password {
                let host = match config.get_hosts().first() {
                    Some(Host::Tcp(host)) => host.clone(),
                    _ => String::new(),
                };
                let port = config.get_ports().first().copied().unwrap_or(5432);
                let user = config.get_user().unwrap_or_default().to_owned();
                match source.password(&host, port, &user).await {
                    Ok(password) => {
                        config.password(password);
                    }
                    // The driver's own error ("password missing") follows; the cause is here.
                    Err(e) => tracing::error!(error = %e, "cannot make the connection's password"),
                }
            }
            let (client, connection) = config.connect(self.tls.clone()).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "postgres connection ended");
                }
            });
            Ok((client, task))
        })
    }
}
