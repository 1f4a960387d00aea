//! Configuration from the environment: resource names from variables, endpoints from the
//! AWS SDK's standard settings (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`), so the
//! same binary talks to AWS, LocalStack or moto.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::https_client::{https_client, https_client_trusting};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set (it names the {1})")]
    Missing(&'static str, &'static str),
    #[error("environment variable {0} must be {1}")]
    Invalid(&'static str, &'static str),
}

/// Names of the resources, as `template.yaml` passes them to the functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub event_stream: String,
    pub write_model_table: String,
    pub read_model_table: String,
    pub archive_bucket: String,
}

pub const EVENT_STREAM_NAME: &str = "EVENT_STREAM_NAME";
pub const WRITE_MODEL_TABLE: &str = "WRITE_MODEL_TABLE";
pub const READ_MODEL_TABLE: &str = "READ_MODEL_TABLE";
pub const ARCHIVE_BUCKET: &str = "ARCHIVE_BUCKET";
/// The EventBridge bus integration events are published to (the distributor).
pub const EVENT_BUS_NAME: &str = "EVENT_BUS_NAME";
/// Who publishes committed outboxes: `inline` (the command handler, the default) or
/// `stream` (the relay on the write-model table's stream), the template's `PublishMode`.
pub const PUBLISH_MODE: &str = "PUBLISH_MODE";
/// Where Firehose writes under the bucket (default `events/`).
pub const ARCHIVE_PREFIX: &str = "ARCHIVE_PREFIX";

/// A resource name a function needs, from its environment.
pub fn required(var: &'static str, what: &'static str) -> Result<String, ConfigError> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing(var, what))
}

impl ResourceNames {
    /// Every name (the local runner and tools need them all; each function reads only the
    /// ones it uses, with [`required`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(ResourceNames {
            event_stream: required(EVENT_STREAM_NAME, "Kinesis event stream")?,
            write_model_table: required(WRITE_MODEL_TABLE, "DynamoDB write-model table")?,
            read_model_table: required(READ_MODEL_TABLE, "DynamoDB read-model table")?,
            archive_bucket: required(ARCHIVE_BUCKET, "S3 archive bucket")?,
        })
    }
}

/// The publish mode a function was deployed with; anything but the two names is refused.
pub fn publish_mode() -> Result<timeline_core::write::PublishMode, ConfigError> {
    match std::env::var(PUBLISH_MODE) {
        Err(_) => Ok(timeline_core::write::PublishMode::Inline),
        Ok(text) => timeline_core::write::PublishMode::parse(&text)
            .ok_or(ConfigError::Invalid(PUBLISH_MODE, "inline or stream")),
    }
}

/// How every client retries: the standard mode (exponential backoff with jitter, and a
/// retry quota that stops retries when a service keeps failing), 3 attempts, the first
/// retry after up to 50 ms. Throttling and 5xx answers are retried; a throttled read that
/// still fails is retried again by the reader within its own time budget.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_secs(1))
}

/// How long a call may take: well inside every function's timeout, so a stalled call ends
/// in an answer the function can give (a 202 for a publish after its commit, a 503 for a
/// read) rather than in the Lambda being killed. S3 objects are larger: see
/// [`S3_TIMEOUTS`].
pub fn timeout_config() -> TimeoutConfig {
    timeouts(TIMEOUTS)
}

/// Attempt and operation timeouts of every call but S3's.
pub const TIMEOUTS: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(5));

/// S3 attempt and operation timeouts (an archive object is up to Firehose's 128 MiB buffer).
pub const S3_TIMEOUTS: (Duration, Duration) = (Duration::from_secs(15), Duration::from_secs(25));

/// A second to connect, then the given limits for one attempt and for the whole call.
fn timeouts((attempt, operation): (Duration, Duration)) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build()
}

/// A function's SDK settings, from the environment Lambda gives it and nothing else: the
/// region (`AWS_REGION`, else `AWS_DEFAULT_REGION`), the credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), the endpoints (`AWS_ENDPOINT_URL_<SERVICE>`,
/// else `AWS_ENDPOINT_URL`, unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`), with the
/// retry and timeout settings above and [`https_client`]. Lambda always sets these, so the
/// SDK's configuration loader ([`sdk_loader`], for tools that run elsewhere) would only
/// add what a function never uses: profile files, web identity and its STS client,
/// container and instance metadata, SSO. Not calling it keeps all of that out of the
/// functions' binaries (0.29-0.76 MB of each arm64 zip).
pub fn lambda_sdk_config() -> SdkConfig {
    sdk_config_from(aws_types::os_shim_internal::Env::real())
}

fn sdk_config_from(env: aws_types::os_shim_internal::Env) -> SdkConfig {
    let ignore_endpoints = env
        .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let mut sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .http_client(https_client())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            ),
        )
        .service_config(EnvOnly {
            env: env.clone(),
            ignore_endpoints,
        });
    sdk.set_region(
        env.get("AWS_REGION")
            .or_else(|_| env.get("AWS_DEFAULT_REGION"))
            .ok()
            .map(aws_config::Region::new),
    );
    if !ignore_endpoints {
        sdk.set_endpoint_url(env.get("AWS_ENDPOINT_URL").ok());
    }
    sdk.build()
}

/// Per-service settings (`AWS_ENDPOINT_URL_KINESIS`, ...) read as the SDK's loader reads
/// them from the environment (the service's variable, else the global one), without
/// looking in profile files.
#[derive(Debug)]
struct EnvOnly {
    env: aws_types::os_shim_internal::Env,
    ignore_endpoints: bool,
}

impl aws_types::service_config::LoadServiceConfig for EnvOnly {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        if self.ignore_endpoints && key.env() == "AWS_ENDPOINT_URL" {
            return None;
        }
        aws_runtime::env_config::EnvConfigValue::new()
            .env(key.env())
            .service_id(key.service_id())
            .load(&self.env, None)
            .map(|(value, _)| value.into_owned())
    }
}

/// The SDK settings every client starts from outside Lambda (the local runner, tests,
/// tools): region, credentials and endpoints by the SDK's whole default chain, the retry
/// and timeout settings above, and [`https_client`].
pub fn sdk_loader() -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .http_client(https_client());
    match env_credentials() {
        Some(provider) => loader.credentials_provider(provider),
        None => loader,
    }
}

/// The credentials in the environment, when they are there (always, in Lambda). The default
/// chain would choose them too, as its first link; naming them directly skips building the
/// rest of the chain (profile files, web identity and its STS client, container and
/// instance metadata), which cost each function about 1.7 ms of its start.
fn env_credentials() -> Option<aws_config::environment::EnvironmentVariableCredentialsProvider> {
    let set = |var| std::env::var_os(var).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        .then(aws_config::environment::EnvironmentVariableCredentialsProvider::new)
}

/// Loads the shared SDK configuration (region, credentials, endpoint overrides).
pub async fn load_sdk_config() -> SdkConfig {
    sdk_loader().load().await
}

/// The service clients, each built on its first use (a function builds only those it
/// uses, about half a million instructions each) and then shared by every request and every
/// clone.
#[derive(Clone, Debug)]
pub struct Clients {
    /// What the clients are built from (credentials and region, for signing RDS tokens).
    pub sdk: SdkConfig,
    built: Arc<Built>,
}

#[derive(Clone, Debug, Default)]
struct Built {
    dynamodb: OnceLock<aws_sdk_dynamodb::Client>,
    kinesis: OnceLock<aws_sdk_kinesis::Client>,
    s3: OnceLock<aws_sdk_s3::Client>,
    eventbridge: OnceLock<aws_sdk_eventbridge::Client>,
}

impl Clients {
    pub fn new(sdk: &SdkConfig) -> Self {
        Clients {
            sdk: sdk.clone(),
            built: Arc::default(),
        }
    }

    /// A function's clients, on [`lambda_sdk_config`].
    pub async fn from_env() -> Self {
        Clients::new(&lambda_sdk_config())
    }

    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        self.built
            .dynamodb
            .get_or_init(|| aws_sdk_dynamodb::Client::new(&self.sdk))
    }

    pub fn kinesis(&self) -> &aws_sdk_kinesis::Client {
        self.built
            .kinesis
            .get_or_init(|| aws_sdk_kinesis::Client::new(&self.sdk))
    }

    pub fn eventbridge(&self) -> &aws_sdk_eventbridge::Client {
        self.built
            .eventbridge
            .get_or_init(|| aws_sdk_eventbridge::Client::new(&self.sdk))
    }

    /// S3 with its longer timeouts ([`S3_TIMEOUTS`]), buckets addressed by path behind an
    /// endpoint override (emulators serve buckets by path, not by virtual host).
    pub fn s3(&self) -> &aws_sdk_s3::Client {
        self.built.s3.get_or_init(|| {
            let path_style = std::env::var_os("AWS_ENDPOINT_URL").is_some()
                || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
            let s3 = aws_sdk_s3::config::Builder::from(&self.sdk)
                .force_path_style(path_style)
                .timeout_config(timeouts(S3_TIMEOUTS))
                .build();
            aws_sdk_s3::Client::from_conf(s3)
        })
    }

    /// These clients with DynamoDB's replaced (a test's, with an interceptor).
    pub fn with_dynamodb(mut self, client: aws_sdk_dynamodb::Client) -> Self {
        Arc::make_mut(&mut self.built).dynamodb = OnceLock::from(client);
        self
    }

    /// These clients with Kinesis' replaced (a test's, with an interceptor).
    pub fn with_kinesis(mut self, client: aws_sdk_kinesis::Client) -> Self {
        Arc::make_mut(&mut self.built).kinesis = OnceLock::from(client);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::runtime_components::{
        RuntimeComponents, RuntimeComponentsBuilder,
    };
    use aws_smithy_types::config_bag::ConfigBag;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// An HTTP client that counts the service clients built on it (each one asks it to check
    /// its configuration once).
    #[derive(Debug, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl HttpClient for Counting {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            unreachable!("building a client never asks for a connector")
        }

        fn validate_base_client_config(
            &self,
            _: &RuntimeComponentsBuilder,
            _: &ConfigBag,
        ) -> Result<(), BoxError> {
            self.0.fetch_add(1, SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_functions_settings_come_from_lambdas_environment() {
        use aws_types::os_shim_internal::Env;
        use aws_types::service_config::ServiceConfigKey;
        let endpoint_of = |sdk: &SdkConfig, service| {
            let key = ServiceConfigKey::builder()
                .service_id(service)
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .unwrap();
            sdk.service_config().unwrap().load_config(key)
        };
        let mut vars = vec![
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-2"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:9000"),
        ];
        let sdk = sdk_config_from(Env::from_slice(&vars));
        assert_eq!(sdk.region().unwrap().as_ref(), "eu-west-1");
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert_eq!(
            endpoint_of(&sdk, "Kinesis").as_deref(),
            Some("http://127.0.0.1:9000"),
            "the service's own endpoint first"
        );
        assert_eq!(
            endpoint_of(&sdk, "DynamoDB").as_deref(),
            Some("http://127.0.0.1:4566"),
            "else the global one"
        );
        assert!(sdk.credentials_provider().is_some());
        assert_eq!(sdk.retry_config(), Some(&retry_config()));

        vars.retain(|(k, _)| *k != "AWS_REGION");
        vars.push(("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"));
        let sdk = sdk_config_from(Env::from_slice(&vars));
        assert_eq!(sdk.region().unwrap().as_ref(), "us-east-2");
        assert_eq!(sdk.endpoint_url(), None);
        assert_eq!(endpoint_of(&sdk, "Kinesis"), None);
        assert_eq!(endpoint_of(&sdk, "DynamoDB"), None);
    }

    #[test]
    fn a_client_is_built_on_first_use_once_and_shared_by_clones() {
        let built = Arc::new(AtomicUsize::new(0));
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .http_client(SharedHttpClient::new(Counting(built.clone())))
            .build();
        let clients = Clients::new(&sdk);
        assert_eq!(built.load(SeqCst), 0, "nothing built up front");
        let copy = clients.clone();
        clients.dynamodb();
        copy.dynamodb();
        clients.dynamodb();
        assert_eq!(built.load(SeqCst), 1, "one DynamoDB client for the process");
        copy.s3();
        assert_eq!(built.load(SeqCst), 2);

        let replaced = copy.with_kinesis(aws_sdk_kinesis::Client::new(&sdk));
        assert_eq!(built.load(SeqCst), 3);
        replaced.kinesis();
        replaced.dynamodb();
        assert_eq!(
            built.load(SeqCst),
            3,
            "the given client is used, the built one kept"
        );
    }
}
