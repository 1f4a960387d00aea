//! The read store on Aurora PostgreSQL as the functions reach it: through a TLS front that
//! stands where RDS Proxy stands (TLS only, a cleartext password it checks, then the real
//! server), with an IAM token made for every connection. The tokens are checked against the
//! AWS SDK for Python's own signer.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use timeline_aws::rds_auth::auth_token;
use timeline_aws::read_store::{OpenError, ReadStoreSettings};
use timeline_aws::Clients;
use timeline_core::ports::ReadModelQueries;
use timeline_core::StreamKey;
use timeline_postgres::{ConnectError, ReadStore};
use timeline_testkit::tls_front::TlsFront;

const KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION: &str = "session/token+with=signs";

fn credentials() -> Credentials {
    Credentials::new(KEY, SECRET, Some(SESSION.into()), None, "test")
}

fn clients() -> Clients {
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(SharedCredentialsProvider::new(credentials()))
        .build();
    Clients::new(&sdk)
}

fn query(token: &str) -> BTreeMap<String, String> {
    token
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A token is right when the same signer, at the token's own time, makes the same one: the
/// front accepts only tokens for this host, port and user, signed with the test's keys.
fn valid_token(token: &str, host: &str, port: u16, user: &str) -> bool {
    let Some(date) = query(token).get("X-Amz-Date").cloned() else {
        return false;
    };
    let Ok(when) = chrono::NaiveDateTime::parse_from_str(&date, "%Y%m%dT%H%M%SZ") else {
        return false;
    };
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(when.and_utc().timestamp() as u64);
    auth_token(host, port, user, "eu-west-1", &credentials(), when).is_ok_and(|t| t == token)
}

#[test]
fn iam_tokens_are_the_ones_the_aws_sdk_for_python_makes() {
    let Some(python) = timeline_testkit::venv_python() else {
        eprintln!("skipped: no .venv (run infra/test.sh once)");
        return;
    };
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_205_600); // 2026-12-02T10:00:00Z
    for (host, port, user) in [
        (
            "proxy.proxy-abc.eu-west-1.rds.amazonaws.com",
            5432,
            "timeline",
        ),
        ("127.0.0.1", 15432, "reader with space"),
    ] {
        let ours = auth_token(host, port, user, "eu-west-1", &credentials(), when).unwrap();
        let script = r#"
import datetime, sys
from unittest import mock
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
host, port, user, key, secret, session = sys.argv[1:]
request = AWSRequest(method="GET", url=f"https://{host}:{port}/", params={"Action": "connect", "DBUser": user})
auth = SigV4QueryAuth(Credentials(key, secret, session), "rds-db", "eu-west-1", expires=900)
with mock.patch("botocore.auth.get_current_datetime", return_value=datetime.datetime(2026, 12, 2, 10, 0, 0)):
    auth.add_auth(request)
print(request.prepare().url[len("https://"):])
"#;
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                script,
                host,
                &port.to_string(),
                user,
                KEY,
                SECRET,
                SESSION,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert_eq!(
            ours.split_once('?').unwrap().0,
            theirs.split_once('?').unwrap().0
        );
        assert_eq!(
            query(&ours),
            query(&theirs),
            "\nours:   {ours}\ntheirs: {theirs}"
        );
        assert_eq!(query(&ours)["X-Amz-Expires"], "900");
        assert!(query(&ours).contains_key("X-Amz-Security-Token"));
    }
}

/// A migrated database behind a TLS front that checks IAM tokens; the settings to reach it.
async fn aurora_like(
    check: impl Fn(&str, u16) -> bool + Send + Sync + 'static,
) -> Option<(TlsFront, String)> {
    let url = timeline_testkit::postgres_database().await?;
    let pool = timeline_postgres::pool(&url).unwrap();
    timeline_postgres::migrate(&pool).await.unwrap();
    let server: std::net::SocketAddr = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let front = TlsFront::start(server, check).await;
    Some((front, database))
}

fn settings(front: &TlsFront, database: &str, trust_ca: bool) -> ReadStoreSettings {
    ReadStoreSettings::AuroraPostgres {
        url: format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=require",
            front.addr.port()
        ),
        iam: true,
        extra_roots_pem: trust_ca.then(|| front.ca_pem.clone().into_bytes()),
    }
}

#[tokio::test]
async fn the_functions_reach_aurora_over_tls_with_a_fresh_iam_token_per_connection() {
    let Some((front, database)) =
        aurora_like(|token, port| valid_token(token, "127.0.0.1", port, "postgres")).await
    else {
        return;
    };
    let store = settings(&front, &database, true)
        .open(&clients())
        .await
        .expect("open through the front");
    assert!(matches!(store, ReadStore::Postgres(_)));
    // Several connections at once: each one presents its own token.
    let key = StreamKey::new("ride", "r-1");
    let reads = (0..3).map(|_| store.view(&key));
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.unwrap(), None);
    }
    let tokens = front.passwords();
    assert!(tokens.len() >= 2, "one token per connection: {tokens:?}");
    for token in &tokens {
        assert!(
            valid_token(token, "127.0.0.1", front.addr.port(), "postgres"),
            "{token}"
        );
    }
}

#[tokio::test]
async fn a_server_certificate_the_function_does_not_trust_is_refused() {
    let Some((front, database)) = aurora_like(|_, _| true).await else {
        return;
    };
    let refused = settings(&front, &database, false).open(&clients()).await;
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(
        front.passwords().is_empty(),
        "no token sent before the server is trusted"
    );
}

#[tokio::test]
async fn a_token_the_proxy_refuses_is_an_error_that_says_so() {
    let Some((front, database)) = aurora_like(|_, _| false).await else {
        return;
    };
    let refused = settings(&front, &database, true).open(&clients()).await;
    let message = refused.expect_err("refused").to_string();
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
}

#[tokio::test]
async fn a_token_is_never_sent_without_tls() {
    let settings = ReadStoreSettings::AuroraPostgres {
        url: "postgres://postgres@127.0.0.1:5432/timeline".into(),
        iam: true,
        extra_roots_pem: None,
    };
    let refused = settings.open(&clients()).await.expect_err("refused");
    assert!(
        matches!(refused, OpenError::Connect(ConnectError::TokenWithoutTls)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_store_older_than_the_code_is_refused_with_the_way_to_migrate() {
    let Some(url) = timeline_testkit::postgres_database().await else {
        return;
    };
    let settings = ReadStoreSettings::AuroraPostgres {
        url,
        iam: false,
        extra_roots_pem: None,
    };
    let refused = settings.open(&clients()).await.expect_err("refused");
    assert!(matches!(refused, OpenError::Schema(_)), "{refused:?}");
    assert!(refused.to_string().contains("migrate"), "{refused}");
}
