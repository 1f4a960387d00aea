//! IAM authentication to Aurora and RDS Proxy: the password is a token, a SigV4-presigned
//! `GET https://<host>:<port>/?Action=connect&DBUser=<user>` for the `rds-db` service, valid
//! for 15 minutes and without the scheme. Signing is local (no call to AWS), with the
//! function's own credentials; the role needs `rds-db:connect` on the database user.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use futures::future::BoxFuture;
use std::time::{Duration, SystemTime};

/// How long a token may be used to connect (the most RDS accepts).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum AuthTokenError {
    #[error("no AWS credentials to sign an RDS token with: {0}")]
    Credentials(String),
    #[error("no AWS region to sign an RDS token for")]
    Region,
    #[error("cannot sign an RDS token: {0}")]
    Signing(String),
}

/// The token for `user` at `host:port` in `region`, signed at `now`.
pub fn auth_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String, AuthTokenError> {
    let signing = |e: &dyn std::fmt::Display| AuthTokenError::Signing(e.to_string());
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| signing(&e))?
        .into();
    let query = form_urlencoded(&[("Action", "connect"), ("DBUser", user)]);
    let url = format!("https://{host}:{port}/?{query}");
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| signing(&e))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| signing(&e))?
        .into_parts();
    let mut request = http::Request::builder()
        .uri(&url)
        .body(())
        .map_err(|e| signing(&e))?;
    instructions.apply_to_request_http1x(&mut request);
    let signed = request.uri().to_string();
    Ok(signed
        .strip_prefix("https://")
        .unwrap_or(&signed)
        .to_owned())
}

fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 unreserved characters stay, everything else is %XX (as SigV4 canonicalizes).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Makes a token for every new PostgreSQL connection, from the SDK's credentials chain (the
/// function's role on Lambda).
pub struct IamPassword {
    credentials: SharedCredentialsProvider,
    region: String,
}

impl IamPassword {
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Result<Self, AuthTokenError> {
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| AuthTokenError::Credentials("no credentials provider".into()))?;
        let region = sdk.region().ok_or(AuthTokenError::Region)?.to_string();
        Ok(IamPassword {
            credentials,
            region,
        })
    }

    pub async fn token(&self, host: &str, port: u16, user: &str) -> Result<String, AuthTokenError> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| AuthTokenError::Credentials(e.to_string()))?;
        auth_token(
            host,
            port,
            user,
            &self.region,
            &credentials,
            SystemTime::now(),
        )
    }
}

impl timeline_postgres::PasswordSource for IamPassword {
    fn password<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        user: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            self.token(host, port, user)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_encoded_in_the_query() {
        assert_eq!(
            form_urlencoded(&[("DBUser", "a b/c+d@e")]),
            "DBUser=a%20b%2Fc%2Bd%40e"
        );
        assert_eq!(percent_encode("timeline_rw-1.x~"), "timeline_rw-1.x~");
    }
}
