//! Fetching AWS credentials from the source the environment names
//! ([`Source::choose`], the AWS SDKs' default chain), and the instance
//! metadata service (IMDSv2) that also tells this instance's ENI. When to
//! fetch is decided by [`podlb_core::cloud::credentials::CredentialCache`];
//! this is only the IO, on the `podlb-cloud` thread.
//!
//! Endpoints follow the SDKs' settings: `AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! (default `http://169.254.169.254`), `AWS_ENDPOINT_URL_STS` then
//! `AWS_ENDPOINT_URL` (default `https://sts.<region>.amazonaws.com`).

use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::http::{self, Endpoint};
use super::mover::ApiError;
use super::sigv4::{self, Credentials};
use super::xml;
use crate::http::Method;
pub use podlb_core::cloud::credentials::{CredentialCache, Source};

/// The instance metadata service's address on every EC2 instance.
pub const IMDS_DEFAULT: &str = "http://169.254.169.254";
/// The lifetime asked for an IMDSv2 session token (the maximum, 6 h).
pub const IMDS_TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// The STS Query API version.
pub const STS_API_VERSION: &str = "2011-06-15";
/// One exchange with IMDS, STS or the container endpoint (IMDS answers in
/// milliseconds; an unreachable one must not hold the thread long).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// A variable of the process environment (empty counts as unset).
pub fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

fn fail(code: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        code: code.into(),
        message: message.into(),
    }
}

fn transport(e: String) -> ApiError {
    fail("Transport", e)
}

/// Credentials and how long they are valid (`None`: static).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub creds: Credentials,
    pub valid_for: Option<Duration>,
}

/// The instance metadata service, version 2: a session token from
/// `PUT /latest/api/token` (`X-aws-ec2-metadata-token-ttl-seconds`), sent
/// as `X-aws-ec2-metadata-token` with every GET; a 401 means the token
/// expired or is unknown, and one new token is fetched.
pub struct Imds {
    ep: Endpoint,
    token: Option<(String, Instant)>,
}

impl Imds {
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else [`IMDS_DEFAULT`].
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Imds, String> {
        let url = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or(IMDS_DEFAULT.into());
        Ok(Imds::new(Endpoint::parse(&url)?))
    }

    pub fn new(ep: Endpoint) -> Imds {
        Imds { ep, token: None }
    }

    fn token(&mut self) -> Result<String, ApiError> {
        if let Some((t, until)) = &self.token {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let ttl = IMDS_TOKEN_TTL.as_secs().to_string();
        let r = http::request(
            Method::PUT,
            &self.ep,
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
            "",
            FETCH_TIMEOUT,
        )
        .map_err(transport)?;
        let t = r.body.trim();
        if r.status != 200 || t.is_empty() {
            return Err(fail(
                "IMDSToken",
                format!("PUT /latest/api/token: HTTP {}", r.status),
            ));
        }
        // Renewed a minute before the service forgets it.
        let until = Instant::now() + IMDS_TOKEN_TTL - Duration::from_secs(60);
        self.token = Some((t.to_string(), until));
        Ok(t.to_string())
    }

    /// `GET /latest/meta-data/<path>`, the body trimmed.
    pub fn get(&mut self, path: &str) -> Result<String, ApiError> {
        let target = format!("/latest/meta-data/{path}");
        let mut retried = false;
        loop {
            let token = self.token()?;
            let r = http::request(
                Method::GET,
                &self.ep,
                &target,
                &[("X-aws-ec2-metadata-token", token)],
                "",
                FETCH_TIMEOUT,
            )
            .map_err(transport)?;
            match r.status {
                200 => return Ok(r.body.trim().to_string()),
                401 if !retried => {
                    retried = true;
                    self.token = None;
                }
                s => return Err(fail("IMDS", format!("GET {target}: HTTP {s}"))),
            }
        }
    }

    /// This instance's primary ENI: `mac`, then
    /// `network/interfaces/macs/<mac>/interface-id`.
    pub fn interface_id(&mut self) -> Result<String, ApiError> {
        let mac = self.get("mac")?;
        if mac.is_empty() || mac.contains('/') {
            return Err(fail("IMDS", format!("mac {mac:?}")));
        }
        let eni = self.get(&format!("network/interfaces/macs/{mac}/interface-id"))?;
        if !eni.starts_with("eni-") {
            return Err(fail("IMDS", format!("interface-id {eni:?} is not an ENI")));
        }
        Ok(eni)
    }

    /// The instance profile role's credentials:
    /// `iam/security-credentials/` names the role, then its document.
    pub fn role_credentials(&mut self, now: SystemTime) -> Result<Fetched, ApiError> {
        let roles = self.get("iam/security-credentials/")?;
        let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Err(fail(
                "NoInstanceProfile",
                "the instance has no IAM role (iam/security-credentials/ is empty)",
            ));
        };
        let doc = self.get(&format!("iam/security-credentials/{role}"))?;
        json_credentials(&doc, now)
    }
}

/// The JSON document of IMDS and of the container endpoint.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

/// Reads `{"Code": "Success", "AccessKeyId", "SecretAccessKey", "Token",
/// "Expiration"}`.
pub fn json_credentials(doc: &str, now: SystemTime) -> Result<Fetched, ApiError> {
    let j: JsonCredentials = serde_json::from_str(doc)
        .map_err(|e| fail("BadResponse", format!("credentials document: {e}")))?;
    if let Some(code) = j.code.filter(|c| c != "Success") {
        return Err(fail(&code, j.message.unwrap_or_default()));
    }
    let (Some(id), Some(secret)) = (j.access_key_id, j.secret_access_key) else {
        return Err(fail(
            "BadResponse",
            "credentials document without AccessKeyId or SecretAccessKey",
        ));
    };
    let valid_for = j.expiration.map(|e| valid_for(&e, now)).transpose()?;
    Ok(Fetched {
        creds: Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: j.token.filter(|t| !t.is_empty()),
        },
        valid_for,
    })
}

/// How long from `now` until `expiration` (RFC 3339); an expiration
/// already past is an error, not credentials to retry with at once.
pub fn valid_for(expiration: &str, now: SystemTime) -> Result<Duration, ApiError> {
    let t: jiff::Timestamp = expiration
        .trim()
        .parse()
        .map_err(|e| fail("BadResponse", format!("Expiration {expiration:?}: {e}")))?;
    let now = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let left = Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
    if left.is_zero() {
        return Err(fail(
            "ExpiredCredentials",
            format!("credentials expired at {expiration}"),
        ));
    }
    Ok(left)
}

/// STS `AssumeRoleWithWebIdentity`: unsigned, the token is the
/// authentication. Its answer's `<Credentials>`.
pub fn parse_sts(status: u16, body: &str, now: SystemTime) -> Result<Fetched, ApiError> {
    if let Some((code, message)) = xml::error(body) {
        return Err(fail(&code, message));
    }
    if !(200..300).contains(&status) {
        return Err(fail(
            &format!("HTTP{status}"),
            body.chars().take(200).collect::<String>(),
        ));
    }
    let c = xml::first(body, "Credentials").ok_or_else(|| {
        fail(
            "BadResponse",
            "AssumeRoleWithWebIdentity without Credentials",
        )
    })?;
    let get = |k: &str| xml::first(&c, k).filter(|v| !v.is_empty());
    let (Some(id), Some(secret), Some(token), Some(exp)) = (
        get("AccessKeyId"),
        get("SecretAccessKey"),
        get("SessionToken"),
        get("Expiration"),
    ) else {
        return Err(fail("BadResponse", "incomplete Credentials"));
    };
    Ok(Fetched {
        creds: Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: Some(token),
        },
        valid_for: Some(valid_for(&exp, now)?),
    })
}

/// Where [`Provider::fetch`] goes.
pub struct Provider {
    pub source: Source,
    /// The STS endpoint (web identity).
    pub sts: Endpoint,
    /// [`Source::Environment`]'s keys, read once.
    keys: Option<Credentials>,
}

impl Provider {
    /// The source `env` names (a variable lookup: [`process_env`] but in
    /// tests); STS of `region` unless `AWS_ENDPOINT_URL_STS` /
    /// `AWS_ENDPOINT_URL` say otherwise.
    pub fn from_env(
        region: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Provider, String> {
        let sts = env("AWS_ENDPOINT_URL_STS")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        let source = Source::choose(&env);
        let keys = (source == Source::Environment).then(|| Credentials {
            access_key_id: env("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            session_token: env("AWS_SESSION_TOKEN"),
        });
        Ok(Provider {
            source,
            sts: Endpoint::parse(&sts)?,
            keys,
        })
    }

    /// Fetches credentials from the source (blocking, bounded by
    /// [`FETCH_TIMEOUT`] per exchange).
    pub fn fetch(&self, imds: &mut Imds) -> Result<Fetched, ApiError> {
        let now = SystemTime::now();
        match &self.source {
            Source::Environment => Ok(Fetched {
                creds: self
                    .keys
                    .clone()
                    .ok_or_else(|| fail("NoCredentials", "no keys"))?,
                valid_for: None,
            }),
            Source::WebIdentity {
                role_arn,
                token_file,
                session_name,
            } => {
                // Read on every fetch: the kubelet rotates the projected token.
                let token = std::fs::read_to_string(token_file)
                    .map_err(|e| fail("WebIdentityToken", format!("{token_file}: {e}")))?;
                let session = session_name.clone().unwrap_or_else(|| {
                    let ms = now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis());
                    format!("podlb-{ms}")
                });
                let body = sigv4::query_body(
                    "AssumeRoleWithWebIdentity",
                    STS_API_VERSION,
                    &[
                        ("RoleArn", role_arn),
                        ("RoleSessionName", &session),
                        ("WebIdentityToken", token.trim()),
                    ],
                );
                let headers = [("Content-Type", sigv4::FORM_CONTENT_TYPE.to_string())];
                let r = http::post(&self.sts, &headers, &body, FETCH_TIMEOUT).map_err(transport)?;
                parse_sts(r.status, &r.body, now)
            }
            Source::Container {
                uri,
                token_file,
                token,
            } => {
                let ep = Endpoint::parse(uri).map_err(|e| fail("BadEndpoint", e))?;
                let auth = match token_file {
                    Some(f) => Some(
                        std::fs::read_to_string(f)
                            .map_err(|e| fail("ContainerToken", format!("{f}: {e}")))?
                            .trim()
                            .to_string(),
                    ),
                    None => token.clone(),
                };
                let headers: Vec<(&str, String)> =
                    auth.into_iter().map(|a| ("Authorization", a)).collect();
                let r = http::request(Method::GET, &ep, &ep.path, &headers, "", FETCH_TIMEOUT)
                    .map_err(transport)?;
                if r.status != 200 {
                    return Err(fail(
                        &format!("HTTP{}", r.status),
                        r.body.chars().take(200).collect::<String>(),
                    ));
                }
                json_credentials(&r.body, now)
            }
            Source::InstanceMetadata => imds.role_credentials(now),
            Source::Nothing => Err(fail(
                "NoCredentials",
                "no AWS credentials in the environment and AWS_EC2_METADATA_DISABLED=true",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        SystemTime::from(s.parse::<jiff::Timestamp>().unwrap())
    }

    #[test]
    fn imds_document() {
        let doc = r#"{"Code":"Success","LastUpdated":"2026-12-03T12:00:00Z","Type":"AWS-HMAC",
            "AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-03T18:00:00Z"}"#;
        let f = json_credentials(doc, at("2026-12-03T12:00:00Z")).unwrap();
        assert_eq!(f.creds.access_key_id, "ASIA1");
        assert_eq!(f.creds.session_token.as_deref(), Some("t"));
        assert_eq!(f.valid_for, Some(Duration::from_secs(6 * 3600)));
        // Expired already: an error, not a hot loop of fetches.
        let e = json_credentials(doc, at("2026-12-03T18:00:01Z")).unwrap_err();
        assert_eq!(e.code, "ExpiredCredentials");
        let e = json_credentials(
            r#"{"Code":"AssumeRoleUnauthorizedAccess","Message":"m"}"#,
            at("2026-12-03T12:00:00Z"),
        )
        .unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("AssumeRoleUnauthorizedAccess", "m")
        );
        assert_eq!(
            json_credentials("<html>", SystemTime::now())
                .unwrap_err()
                .code,
            "BadResponse"
        );
        // The container endpoint has no Code.
        let f = json_credentials(
            r#"{"AccessKeyId":"A","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-03T12:15:00.5Z"}"#,
            at("2026-12-03T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(f.valid_for, Some(Duration::from_millis(900_500)));
    }

    #[test]
    fn sts_answer() {
        let ok = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
            <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAX</AccessKeyId>\
            <SecretAccessKey>sec</SecretAccessKey><SessionToken>tok</SessionToken>\
            <Expiration>2026-12-03T13:00:00Z</Expiration></Credentials>\
            <AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/podlb/x</Arn></AssumedRoleUser>\
            </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let f = parse_sts(200, ok, at("2026-12-03T12:00:00Z")).unwrap();
        assert_eq!(f.creds.secret_access_key, "sec");
        assert_eq!(f.valid_for, Some(Duration::from_secs(3600)));
        let err = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
            <Message>bad token</Message></Error></ErrorResponse>";
        let e = parse_sts(400, err, SystemTime::now()).unwrap_err();
        assert_eq!(e.code, "InvalidIdentityToken");
        assert_eq!(
            parse_sts(503, "busy", SystemTime::now()).unwrap_err().code,
            "HTTP503"
        );
        let partial = ok.replace("<SessionToken>tok</SessionToken>", "");
        assert_eq!(
            parse_sts(200, &partial, at("2026-12-03T12:00:00Z"))
                .unwrap_err()
                .code,
            "BadResponse"
        );
    }
}
