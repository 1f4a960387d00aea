//! The functions' HTTPS client (`timeline_aws::https_client`), against servers on loopback:
//! it verifies every server (a certificate from an unknown CA is refused before any request
//! is sent), it works over TLS with a root it trusts, it keeps connections alive, and it
//! gives the SDK's retries what they need (a failed attempt's connection is not reused, a
//! connection closed before the answer is retried, a handshake that hangs is a timeout).

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

/// Building a client builds no TLS connector: each client sharing one HTTPS client gets a
/// verifying connector on its first call, one per timeout setting, and an unknown CA is
/// still refused after a trusted call.
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

/// What the plain-HTTP server does with one request.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    ServerError,
    /// Read the request, then close the connection without a word.
    HangUp,
}

/// An HTTP/1.1 server on loopback (keep-alive) answering the n-th request (from 0) as
/// `script` says; it counts the connections it accepted and the requests it read.
async fn plain_server(script: fn(usize) -> Answer) -> (u16, Arc<Mutex<(usize, usize)>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new((0, 0)));
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counts.lock().unwrap().0 += 1;
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: the head, then as many bytes as its Content-Length.
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let n = {
                        let mut counts = counts.lock().unwrap();
                        counts.1 += 1;
                        counts.1 - 1
                    };
                    let (status, body) = match script(n) {
                        Answer::HangUp => return,
                        Answer::Ok => ("200 OK", r#"{"TableNames":[]}"#),
                        Answer::ServerError => (
                            "500 Internal Server Error",
                            r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"try again"}"#,
                        ),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// A DynamoDB client on `http://127.0.0.1:port` with the functions' retry settings.
fn plain_dynamodb(port: u16) -> aws_sdk_dynamodb::Client {
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKID", "secret", None, None, "test",
        )))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(timeline_aws::config::retry_config())
        .timeout_config(timeline_aws::config::timeout_config())
        .http_client(https_client())
        .build();
    aws_sdk_dynamodb::Client::new(&sdk)
}

#[tokio::test]
async fn calls_in_a_row_share_one_kept_alive_connection() {
    let (port, seen) = plain_server(|_| Answer::Ok).await;
    let client = plain_dynamodb(port);
    for _ in 0..3 {
        client.list_tables().send().await.expect("answered");
    }
    assert_eq!(*seen.lock().unwrap(), (1, 3), "(connections, requests)");
}

/// A call whose first attempt is answered as `first` says and the next ones with a 200:
/// it succeeds on the retry, which went out on a new connection.
async fn retried_on_a_new_connection(first: fn(usize) -> Answer) {
    let (port, seen) = plain_server(first).await;
    plain_dynamodb(port)
        .list_tables()
        .send()
        .await
        .expect("the retry is answered");
    assert_eq!(*seen.lock().unwrap(), (2, 2), "(connections, requests)");
}

/// The SDK poisons the connection of an attempt answered with a 5xx, so the retry does
/// not reuse it (the connection stays open on the server's side).
#[tokio::test]
async fn a_retry_after_a_server_error_goes_out_on_a_new_connection() {
    retried_on_a_new_connection(|n| match n {
        0 => Answer::ServerError,
        _ => Answer::Ok,
    })
    .await;
}

/// A connection closed before the answer is an I/O error the SDK retries.
#[tokio::test]
async fn a_connection_closed_before_the_answer_is_retried() {
    retried_on_a_new_connection(|n| match n {
        0 => Answer::HangUp,
        _ => Answer::Ok,
    })
    .await;
}

/// A server that accepts the TCP connection but never answers the TLS handshake: the
/// connect timeout (TCP and handshake) ends the attempt, as a timeout, long before the
/// attempt's own limit.
#[tokio::test]
async fn a_handshake_that_never_finishes_is_a_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let client = aws_sdk_dynamodb::Client::from_conf(
        dynamodb(port, https_client())
            .config()
            .to_builder()
            .retry_config(aws_config::retry::RetryConfig::disabled())
            // Its 5-second grace for a request body nobody reads would end the wait too.
            .stalled_stream_protection(
                aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_millis(200))
                    .operation_attempt_timeout(std::time::Duration::from_secs(30))
                    .build(),
            )
            .build(),
    );
    let started = std::time::Instant::now();
    let failed = client.list_tables().send().await.expect_err("no handshake");
    let aws_sdk_dynamodb::error::SdkError::DispatchFailure(dispatch) = &failed else {
        panic!("{}", DisplayErrorContext(&failed));
    };
    assert!(dispatch.is_timeout(), "{}", DisplayErrorContext(&failed));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "ended by the connect timeout, not the attempt's"
    );
}
