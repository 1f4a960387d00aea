//! Identity for the local runner, for real: a local token issuer with its own Ed25519 key
//! pair and JWKS, made in the data directory on first start. Requests carry
//! `Authorization: Bearer <token>`; the runner verifies the signature, issuer, audience and
//! expiry, and hands the handlers the same API Gateway request context a Cognito authorizer
//! (users) or an IAM-authorized route (services) would, so the same identity and policy
//! code runs here and in Lambda. A request without a valid token reaches no handler's
//! business: it is answered 401. A token once verified is remembered until it expires, as
//! API Gateway caches an authorizer's answer per token, so a client repeating its token pays
//! a lookup instead of a signature check.

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use timeline_core::access::{Caller, Role};

pub const ISSUER: &str = "timeline-local";
pub const AUDIENCE: &str = "timeline-api";
/// Seconds of clock skew allowed on a token's expiry.
const LEEWAY_SECS: u64 = 5;
/// How many verified tokens are remembered at most.
const VERIFIED_TOKENS: usize = 1024;
/// Where a service token's principal lives, as an IAM role session would name it.
const SERVICE_ARN_PREFIX: &str = "arn:aws:sts::000000000000:assumed-role/";

/// The claims of a local token: a Cognito ID token's (`sub`, `cognito:groups`), or a
/// service's (`service`: the role name the pipeline would assume on AWS).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    exp: u64,
    iat: u64,
    #[serde(
        rename = "cognito:groups",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
}

/// The local issuer: signs tokens, and verifies them against its JWKS.
pub struct Issuer {
    signing: EncodingKey,
    verifying: DecodingKey,
    kid: String,
    jwks: JwkSet,
    verified: Verified,
}

/// Tokens whose signature and claims were checked, with their caller and expiry. Only tokens
/// this issuer signed get in, so its size is bounded by what the issuer minted and by
/// [`VERIFIED_TOKENS`]; a hit is still refused once the token expires.
#[derive(Default)]
struct Verified(Mutex<HashMap<String, (Caller, u64)>>);

impl Verified {
    fn get(&self, token: &str, now: u64) -> Option<Caller> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token)
            .filter(|(_, exp)| now <= exp + LEEWAY_SECS)
            .map(|(caller, _)| caller.clone())
    }

    fn put(&self, token: &str, caller: &Caller, exp: u64, now: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VERIFIED_TOKENS {
            map.retain(|_, (_, exp)| now <= *exp + LEEWAY_SECS);
            if map.len() >= VERIFIED_TOKENS {
                map.clear();
            }
        }
        map.insert(token.to_owned(), (caller.clone(), exp));
    }
}

impl Issuer {
    /// The issuer of `dir` (`<data dir>/issuer`): its key is made on first use and kept
    /// (owner-only), its JWKS written next to it for anyone who wants to verify tokens.
    pub fn open(dir: &Path) -> anyhow::Result<Issuer> {
        let dir = dir.join("issuer");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key_file = dir.join("ed25519.pk8");
        let pkcs8 = match std::fs::read(&key_file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => new_key(&key_file)?,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_file.display())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| anyhow::anyhow!("{} is not an Ed25519 key: {e}", key_file.display()))?;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let kid = x[..16].to_owned();
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(kid.clone()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x,
            }),
        };
        let jwks = JwkSet { keys: vec![jwk] };
        std::fs::write(dir.join("jwks.json"), serde_json::to_vec_pretty(&jwks)?)
            .with_context(|| format!("cannot write {}", dir.display()))?;
        let verifying = DecodingKey::from_jwk(&jwks.keys[0])?;
        Ok(Issuer {
            signing: EncodingKey::from_ed_der(&pkcs8),
            verifying,
            kid,
            jwks,
            verified: Verified::default(),
        })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// A token for `caller`, valid for `ttl_secs`.
    pub fn mint(&self, caller: &Caller, ttl_secs: u64) -> anyhow::Result<String> {
        self.mint_until(caller, now_secs() + ttl_secs)
    }

    fn mint_until(&self, caller: &Caller, exp: u64) -> anyhow::Result<String> {
        let now = now_secs();
        let (sub, groups, service) = match caller {
            Caller::User { subject, roles } => (
                subject.clone(),
                roles.iter().map(|r| r.group().to_owned()).collect(),
                None,
            ),
            Caller::Service { principal } => {
                let role = principal
                    .strip_prefix(SERVICE_ARN_PREFIX)
                    .and_then(|r| r.split('/').next())
                    .unwrap_or(principal);
                (role.to_owned(), vec![], Some(role.to_owned()))
            }
        };
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub,
            exp,
            iat: now,
            groups,
            service,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.signing)?)
    }

    /// The caller a bearer token proves, or why it proves nothing.
    pub fn verify(&self, token: &str) -> Result<Caller, String> {
        let now = now_secs();
        if let Some(caller) = self.verified.get(token, now) {
            return Ok(caller);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation)
            .map_err(|e| e.to_string())?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 256 {
            return Err("the token's subject is empty or too long".into());
        }
        let caller = match claims.service {
            Some(role) => Caller::service(format!("{SERVICE_ARN_PREFIX}{role}/local")),
            None => Caller::user(
                claims.sub,
                claims.groups.iter().filter_map(|g| Role::from_group(g)),
            ),
        };
        self.verified.put(token, &caller, claims.exp, now);
        Ok(caller)
    }

    /// The caller of a request's `Authorization` header, if it proves one.
    pub fn caller_of(&self, authorization: Option<&str>) -> Option<Caller> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        match self.verify(token) {
            Ok(caller) => Some(caller),
            Err(why) => {
                tracing::info!(%why, "token refused");
                None
            }
        }
    }
}

fn new_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("cannot generate a key"))?;
    let bytes = pkcs8.as_ref().to_vec();
    write_private(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(bytes)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The callers the guided demo and the tests act as.
pub fn operator() -> Caller {
    Caller::user("operator-1", [Role::Operator])
}

pub fn pipeline() -> Caller {
    Caller::service(format!("{SERVICE_ARN_PREFIX}video-pipeline/local"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The issuer's directory (its signing key), removed when the test ends.
    fn dir() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("issuer").tempdir().unwrap()
    }

    #[test]
    fn a_token_proves_its_caller_and_nothing_else_does() {
        let d = dir();
        let issuer = Issuer::open(d.path()).unwrap();
        let rider = Caller::user("rider-42", [Role::Rider]);
        let token = issuer.mint(&rider, 60).unwrap();
        assert_eq!(issuer.verify(&token), Ok(rider));
        assert_eq!(
            issuer.verify(&issuer.mint(&pipeline(), 60).unwrap()),
            Ok(pipeline())
        );

        // Tampered, expired, from another issuer's key, or no token at all.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"timeline-local","aud":"timeline-api","sub":"dispatcher","exp":99999999999,"iat":0,"cognito:groups":["operators"]}"#);
        assert!(
            issuer.verify(&parts.join(".")).is_err(),
            "a changed payload"
        );
        let expired = issuer.mint_until(&operator(), now_secs() - 60).unwrap();
        assert!(issuer.verify(&expired).is_err(), "an expired token");
        let other_dir = dir();
        let other = Issuer::open(other_dir.path()).unwrap();
        assert!(other.verify(&token).is_err(), "another issuer's token");
        assert_eq!(issuer.caller_of(None), None);
        assert_eq!(issuer.caller_of(Some("Basic abc")), None);
        assert_eq!(issuer.caller_of(Some("Bearer not-a-token")), None);

        // The key is kept: a second start verifies the first one's tokens.
        let again = Issuer::open(d.path()).unwrap();
        assert!(again.verify(&token).is_ok());
        let jwks: JwkSet =
            serde_json::from_slice(&std::fs::read(d.path().join("issuer/jwks.json")).unwrap())
                .unwrap();
        assert_eq!(jwks.keys.len(), 1);
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires_and_a_tampered_copy_is_not() {
        let d = dir();
        let issuer = Issuer::open(d.path()).unwrap();
        let rider = Caller::user("rider-7", [Role::Rider]);
        let token = issuer.mint(&rider, 60).unwrap();
        assert_eq!(issuer.verify(&token), Ok(rider.clone()));
        assert_eq!(issuer.verified.get(&token, now_secs()), Some(rider.clone()));
        assert_eq!(issuer.verify(&token), Ok(rider.clone()), "answered again");

        // A changed signature is another string: it is checked, and refused.
        let at = token.rfind('.').unwrap() + 10;
        let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
        assert!(issuer.verify(&forged).is_err());

        // Past its expiry (and the leeway) the remembered answer is no answer.
        let exp = issuer.verified.0.lock().unwrap()[&token].1;
        assert_eq!(issuer.verified.get(&token, exp + LEEWAY_SECS), Some(rider));
        assert_eq!(issuer.verified.get(&token, exp + LEEWAY_SECS + 1), None);
    }

    #[test]
    fn the_remembered_tokens_stay_bounded_dropping_the_expired_first() {
        let verified = Verified::default();
        let now = 1_000;
        let who = Caller::user("u", []);
        verified.put("old", &who, now - 100, now);
        for i in 1..VERIFIED_TOKENS {
            verified.put(&format!("t{i}"), &who, now + 60, now);
        }
        verified.put("new", &who, now + 60, now);
        let len = verified.0.lock().unwrap().len();
        assert_eq!(len, VERIFIED_TOKENS, "the expired one made room");
        assert_eq!(verified.get("old", now), None);
        assert_eq!(verified.get("t1", now), Some(who.clone()));

        verified.put("one more", &who, now + 60, now);
        let len = verified.0.lock().unwrap().len();
        assert!(len <= VERIFIED_TOKENS, "{len} remembered");
        assert_eq!(verified.get("one more", now), Some(who));
    }
}
