//! The HTTPS client every SDK client is given: hyper's HTTP/1.1 client over rustls (ring),
//! trusting Mozilla's roots compiled in as trust anchors.
//!
//! Why not the SDK's own client: it always builds in HTTP/2 (the `h2` crate and hyper's
//! HTTP/2 side) although the services we call answer over HTTP/1.1, and it takes roots only
//! as PEM, a 220 KB bundle parsed on the first call of each connector (about 5.5 million
//! instructions). Together about 0.4 MB of each arm64 zip. What it does that matters is kept: TLS
//! with certificate and host-name verification, the connect and read timeouts of
//! [`HttpConnectorSettings`], errors classified so the SDK retries what is transient
//! (timeouts, I/O, a connection closed mid-response), and the connection of a failed attempt
//! poisoned so that the retry opens a new one. Not kept: an HTTP proxy from `HTTPS_PROXY`
//! (functions reach AWS directly or through VPC endpoints).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::retries::ErrorKind;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use hyper_util::client::legacy::connect::{
    capture_connection, CaptureConnection, HttpConnector as Tcp,
};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// The client trusting Mozilla's roots (`webpki-roots`), among them Amazon's, which AWS's
/// endpoints chain to.
pub fn https_client() -> SharedHttpClient {
    https_client_trusting(Vec::new())
}

/// [`https_client`] that also trusts the given PEM roots (an emulator or a proxy of your own
/// behind TLS). Panics, here rather than at the first call, if one of them is not a PEM
/// certificate.
pub fn https_client_trusting(extra_pem: Vec<Vec<u8>>) -> SharedHttpClient {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for pem in extra_pem {
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_default();
        assert!(!certs.is_empty(), "an extra root is not a PEM certificate");
        for cert in certs {
            roots
                .add(cert)
                .expect("an extra root is not a usable certificate");
        }
    }
    SharedHttpClient::new(HttpsClient::new(roots))
}

/// One connector (and so one pool of connections) for each distinct pair of timeouts the
/// SDK asks for, built on its first use and kept.
#[derive(Debug)]
struct HttpsClient {
    roots: Arc<RootCertStore>,
    connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
}

/// Connect and read timeouts.
type Timeouts = (Option<Duration>, Option<Duration>);

impl HttpClient for HttpsClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector((settings.connect_timeout(), settings.read_timeout()))
    }

    /// Nothing to check: the roots were checked when the client was made, and there is no
    /// certificate file to read.
    fn validate_base_client_config(
        &self,
        _: &RuntimeComponentsBuilder,
        _: &ConfigBag,
    ) -> Result<(), BoxError> {
        Ok(())
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("hyper", Some("1.x".into())))
    }
}

impl HttpsClient {
    fn new(roots: RootCertStore) -> Self {
        HttpsClient {
            roots: Arc::new(roots),
            connectors: Mutex::default(),
        }
    }

    fn connector(&self, timeouts: Timeouts) -> SharedHttpConnector {
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(timeouts)
            .or_insert_with(|| SharedHttpConnector::new(Connector::new(&self.roots, timeouts)))
            .clone()
    }
}

type Https = hyper_rustls::HttpsConnector<Tcp>;

struct Connector {
    client: Client<ConnectTimeout<Https>, SdkBody>,
    read_timeout: Option<Duration>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    fn new(roots: &Arc<RootCertStore>, (connect_timeout, read_timeout): Timeouts) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        let mut tcp = Tcp::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            // http:// for an emulator on loopback; AWS's endpoints are all https://.
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the pool never drops idle connections.
            .pool_timer(TokioTimer::new())
            .build(ConnectTimeout {
                inner: https,
                timeout: connect_timeout,
            });
        Connector {
            client,
            read_timeout,
        }
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        // The SDK poisons the connection of an attempt that failed in a way that may leave it
        // broken (a timeout, a 5xx), so the retry does not reuse it.
        let captured = capture_connection(&mut request);
        if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
            smithy.set_connection_retriever(move || connection_metadata(&captured));
        }
        let response = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let response = match read_timeout {
                Some(limit) => match tokio::time::timeout(limit, response).await {
                    Ok(response) => response,
                    Err(_) => return Err(ConnectorError::timeout(TimedOut("read").into())),
                },
                None => response.await,
            };
            match response {
                Ok(response) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(classify(e.into())),
            }
        })
    }
}

fn connection_metadata(captured: &CaptureConnection) -> Option<ConnectionMetadata> {
    captured.connection_metadata().as_ref()?;
    let captured = captured.clone();
    Some(
        ConnectionMetadata::builder()
            .proxied(false)
            .poison_fn(move || {
                if let Some(connection) = captured.connection_metadata().as_ref() {
                    connection.poison();
                }
            })
            .build(),
    )
}

/// What the SDK's retry strategy needs to know of a failed call: timeouts and I/O errors
/// (refused, reset, closed before the answer, a failed TLS handshake) are transient, as is
/// a response cut short; a request that could not be built is the caller's.
fn classify(error: BoxError) -> ConnectorError {
    if find::<TimedOut>(error.as_ref()).is_some() {
        return ConnectorError::timeout(error);
    }
    if let Some(hyper) = find::<hyper::Error>(error.as_ref()) {
        if hyper.is_timeout() {
            return ConnectorError::timeout(error);
        }
        if hyper.is_user() {
            return ConnectorError::user(error);
        }
        if hyper.is_incomplete_message() {
            return ConnectorError::other(error, Some(ErrorKind::TransientError));
        }
        if hyper.is_closed() || hyper.is_canceled() || find::<std::io::Error>(hyper).is_some() {
            return ConnectorError::io(error);
        }
    }
    if let Some(client) = find::<hyper_util::client::legacy::Error>(error.as_ref()) {
        if client.is_connect() || find::<std::io::Error>(client).is_some() {
            return ConnectorError::io(error);
        }
    }
    ConnectorError::other(error, None)
}

fn find<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// A connect (TCP and TLS handshake) or a wait for the response's head that took too long.
#[derive(Debug, thiserror::Error)]
#[error("the {0} timeout elapsed")]
struct TimedOut(&'static str);

/// The connector, with the SDK's connect timeout over both the TCP connect and the TLS
/// handshake.
#[derive(Clone)]
struct ConnectTimeout<C> {
    inner: C,
    timeout: Option<Duration>,
}

type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<C> tower_service::Service<http::Uri> for ConnectTimeout<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Connecting<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.timeout;
        Box::pin(async move {
            match limit {
                Some(limit) => match tokio::time::timeout(limit, connecting).await {
                    Ok(connected) => connected.map_err(Into::into),
                    Err(_) => Err(TimedOut("connect").into()),
                },
                None => connecting.await.map_err(Into::into),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(client: &HttpsClient) -> usize {
        client.connectors.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_connector_is_built_on_first_use_once_for_each_pair_of_timeouts() {
        let client = HttpsClient::new(RootCertStore::empty());
        assert_eq!(built(&client), 0, "nothing built up front");
        let second = Some(Duration::from_secs(1));
        client.connector((second, None));
        client.connector((second, None));
        assert_eq!(built(&client), 1);
        client.connector((second, Some(Duration::from_secs(5))));
        client.connector((None, None));
        assert_eq!(built(&client), 3);
    }

    #[test]
    #[should_panic(expected = "an extra root is not a PEM certificate")]
    fn an_extra_root_that_is_not_a_certificate_is_refused_when_the_client_is_made() {
        https_client_trusting(vec![b"-----BEGIN NONSENSE-----\n".to_vec()]);
    }

    #[test]
    fn mozillas_roots_are_compiled_in_with_amazons_among_them() {
        let roots = webpki_roots::TLS_SERVER_ROOTS;
        assert!(roots.len() > 100, "{} roots", roots.len());
        for name in [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
        ] {
            assert!(
                roots.iter().any(|anchor| anchor
                    .subject
                    .windows(name.len())
                    .any(|w| w == name.as_bytes())),
                "{name}"
            );
        }
    }

    #[test]
    fn failures_are_classified_for_the_retry_strategy() {
        let timed_out = classify(Box::new(TimedOut("connect")));
        assert!(timed_out.is_timeout(), "{timed_out:?}");
        let other = classify("something else".into());
        assert!(other.is_other() && other.as_other().is_none(), "{other:?}");
    }
}
