//! The SDK's HTTPS client with the root certificates compiled in: it still verifies every
//! server (a certificate from an unknown CA is refused before any request is sent), it works
//! over TLS with a root it trusts, and Amazon's roots, which AWS's endpoints chain to, are in.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_types::error::display::DisplayErrorContext;
use std::sync::{Arc, Mutex};
use timeline_aws::config::{https_client, https_client_trusting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS server on loopback that answers every request with an empty table list; it counts
/// the requests it read.
async fn server() -> (u16, String, Arc<Mutex<usize>>) {
    let (config, ca_pem) = timeline_testkit::tls_front::server_config();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buf = vec![0u8; 16 * 1024];
                if tls.read(&mut buf).await.unwrap_or(0) > 0 {
                    *seen.lock().unwrap() += 1;
                    let body = r#"{"TableNames":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    (port, ca_pem, requests)
}

fn dynamodb(
    port: u16,
    http: aws_sdk_dynamodb::config::SharedHttpClient,
) -> aws_sdk_dynamodb::Client {
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKID", "secret", None, None, "test",
        )))
        .endpoint_url(format!("https://127.0.0.1:{port}"))
        .http_client(http)
        .build();
    aws_sdk_dynamodb::Client::new(&sdk)
}

#[tokio::test]
async fn a_server_whose_certificate_no_compiled_in_root_signed_is_refused() {
    let (port, _, requests) = server().await;
    let refused = dynamodb(port, https_client())
        .list_tables()
        .send()
        .await
        .expect_err("an unknown CA is refused");
    let said = DisplayErrorContext(&refused).to_string();
    assert!(said.contains("UnknownIssuer"), "{said}");
    assert_eq!(*requests.lock().unwrap(), 0, "nothing was sent to it");
}

#[tokio::test]
async fn a_server_under_a_trusted_root_is_reached_over_tls() {
    let (port, ca_pem, requests) = server().await;
    let tables = dynamodb(port, https_client_trusting(vec![ca_pem.into_bytes()]))
        .list_tables()
        .send()
        .await
        .expect("answered over TLS");
    assert!(tables.table_names().is_empty());
    assert_eq!(*requests.lock().unwrap(), 1);
}

/// Building a client no longer builds a TLS connector (see `timeline_aws::config`): each
/// client sharing one HTTPS client still gets a verifying connector on its first call, one
/// per timeout setting, and an unknown CA is still refused after a trusted call.
#[tokio::test]
async fn clients_sharing_one_https_client_each_connect_on_first_use() {
    let (port, ca_pem, requests) = server().await;
    let http = https_client_trusting(vec![ca_pem.into_bytes()]);
    let plain = dynamodb(port, http.clone());
    let patient = aws_sdk_dynamodb::Client::from_conf(
        plain
            .config()
            .to_builder()
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(std::time::Duration::from_secs(9))
                    .build(),
            )
            .build(),
    );
    for client in [&plain, &patient, &plain] {
        client
            .list_tables()
            .send()
            .await
            .expect("answered over TLS");
    }
    assert_eq!(*requests.lock().unwrap(), 3);

    let (other, _, elsewhere) = server().await;
    let refused = dynamodb(other, http).list_tables().send().await;
    assert!(refused.is_err(), "its CA is not one the client trusts");
    assert_eq!(*elsewhere.lock().unwrap(), 0);
}

#[test]
fn the_compiled_in_bundle_is_mozillas_roots_with_amazons_among_them() {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let bundle = CertificateDer::pem_slice_iter(timeline_aws::config::MOZILLA_ROOTS_PEM)
        .collect::<Result<Vec<_>, _>>()
        .expect("the bundle is PEM");
    assert_eq!(bundle, webpki_root_certs::TLS_SERVER_ROOT_CERTS);
    for name in [
        "Amazon Root CA 1",
        "Amazon Root CA 2",
        "Amazon Root CA 3",
        "Amazon Root CA 4",
    ] {
        assert!(
            bundle
                .iter()
                .any(|c| c.windows(name.len()).any(|w| w == name.as_bytes())),
            "{name}"
        );
    }
}
