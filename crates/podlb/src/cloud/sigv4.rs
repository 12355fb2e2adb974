//! AWS Signature Version 4, as much of it as the EC2 Query API needs: a
//! POST of an `application/x-www-form-urlencoded` body to `/`, signed
//! with the headers `content-type`, `host`, `x-amz-date` and, with
//! temporary credentials, `x-amz-security-token`.
//!
//! Pure functions: the clock, the credentials and the request come in as
//! arguments, so the tests check them against AWS's published vectors.
//! SHA-256 and HMAC come from `ring`, which the TLS stack already builds.

use std::time::{SystemTime, UNIX_EPOCH};

/// The EC2 Query API version every request names.
pub const EC2_API_VERSION: &str = "2016-11-15";
/// The Content-Type of every EC2 Query request.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Access key, secret and (for temporary credentials) the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the token.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A request to sign.
pub struct Request<'a> {
    pub method: &'a str,
    /// The canonical URI (already encoded; `/` for the Query API).
    pub path: &'a str,
    /// The canonical query string: encoded and sorted by the caller.
    pub query: &'a str,
    /// Headers to sign, any case; `host` and `x-amz-date` must be among them.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The intermediate results and the outcome of signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    /// The `Authorization` header value.
    pub authorization: String,
}

pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, data).as_ref().to_vec()
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// A header value as SigV4 canonicalises it: trimmed, inner runs of spaces
/// collapsed to one.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Signs `req` at `amz_date` (`YYYYMMDDTHHMMSSZ`, the same value as the
/// request's `x-amz-date` header).
pub fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    req: &Request<'_>,
) -> Signed {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), canonical_value(v)))
        .collect();
    headers.sort();
    // Repeated names become one line with the values comma-separated.
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        match merged.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(',');
                lv.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let canonical_headers: String = merged.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = merged
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        req.query,
        canonical_headers,
        signed_headers,
        sha256_hex(req.body)
    );
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = signing_key(&creds.secret_access_key, date, region, service);
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    );
    Signed {
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
    }
}

/// What SigV4 percent-encodes: every byte but RFC 3986's unreserved
/// characters (`A-Z a-z 0-9 - _ . ~`).
const SIGV4_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters as
/// they are, every other byte `%XX` (upper case).
pub fn uri_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SIGV4_ENCODE).to_string()
}

/// The form body of an EC2 Query request: `Action`, `Version`, then the
/// parameters in the order given.
pub fn ec2_body(action: &str, params: &[(&str, &str)]) -> String {
    query_body(action, EC2_API_VERSION, params)
}

/// The form body of a Query API request (EC2, STS) of API `version`.
pub fn query_body(action: &str, version: &str, params: &[(&str, &str)]) -> String {
    let mut body = format!("Action={}&Version={version}", uri_encode(action));
    for (k, v) in params {
        body.push('&');
        body.push_str(&uri_encode(k));
        body.push('=');
        body.push_str(&uri_encode(v));
    }
    body
}

/// The headers to send with an EC2 Query POST of `body` to `host` (the
/// `Host` header value, with the port if not the scheme's default):
/// `Content-Type`, `X-Amz-Date`, `X-Amz-Security-Token` (with a session
/// token) and `Authorization`. The caller adds `Host` and `Content-Length`.
pub fn ec2_headers(
    creds: &Credentials,
    region: &str,
    host: &str,
    body: &str,
    amz_date: &str,
) -> Vec<(&'static str, String)> {
    let mut signed: Vec<(&str, &str)> = vec![
        ("content-type", FORM_CONTENT_TYPE),
        ("host", host),
        ("x-amz-date", amz_date),
    ];
    if let Some(t) = &creds.session_token {
        signed.push(("x-amz-security-token", t));
    }
    let s = sign(
        creds,
        region,
        "ec2",
        amz_date,
        &Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &signed,
            body: body.as_bytes(),
        },
    );
    let mut out = vec![
        ("Content-Type", FORM_CONTENT_TYPE.to_string()),
        ("X-Amz-Date", amz_date.to_string()),
    ];
    if let Some(t) = &creds.session_token {
        out.push(("X-Amz-Security-Token", t.clone()));
    }
    out.push(("Authorization", s.authorization));
    out
}

/// `YYYYMMDDTHHMMSSZ` for a time (UTC); a time before the epoch counts as
/// the epoch.
pub fn amz_date(t: SystemTime) -> String {
    let t = jiff::Timestamp::try_from(t.max(UNIX_EPOCH)).unwrap_or(jiff::Timestamp::MAX);
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credentials of AWS's Signature Version 4 test suite (formerly in
    /// the AWS General Reference, "Signature Version 4 test suite"; the
    /// files live on in the AWS SDKs' test directories).
    fn suite_creds(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_string),
        }
    }
    const DATE: &str = "20150830T123600Z";
    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
    const STAMP: (&str, &str) = ("X-Amz-Date", DATE);
    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn suite(
        method: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        token: Option<&str>,
    ) -> Signed {
        sign(
            &suite_creds(token),
            "us-east-1",
            "service",
            DATE,
            &Request {
                method,
                path: "/",
                query,
                headers,
                body,
            },
        )
    }

    /// Test suite, `get-vanilla`.
    #[test]
    fn sigv4_suite_get_vanilla() {
        let s = suite("GET", "", &[HOST, STAMP], b"", None);
        assert_eq!(
            s.canonical_request,
            format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:{DATE}\n\nhost;x-amz-date\n{EMPTY_SHA}")
        );
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// Test suite, `post-vanilla` and `post-vanilla-query`.
    #[test]
    fn sigv4_suite_post_vanilla() {
        let s = suite("POST", "", &[HOST, STAMP], b"", None);
        assert_eq!(
            s.signature,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        let s = suite("POST", "Param1=value1", &[HOST, STAMP], b"", None);
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             9d659678c1756bb3113e2ce898845a0a79dbbc57b740555917687f1b3340fbbd"
        );
        assert_eq!(
            s.signature,
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
        );
    }

    /// Test suite, `post-x-www-form-urlencoded`: a signed Content-Type and a
    /// form body, the shape of every EC2 Query request.
    #[test]
    fn sigv4_suite_post_x_www_form_urlencoded() {
        let s = suite(
            "POST",
            "",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                HOST,
                STAMP,
            ],
            b"Param1=value1",
            None,
        );
        assert_eq!(
            s.canonical_request,
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n\
             9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"
        );
        assert_eq!(
            s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    /// Test suite, `post-sts-token/post-sts-header-before`: the session token
    /// is a signed header.
    #[test]
    fn sigv4_suite_post_sts_header_before() {
        const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let s = suite(
            "POST",
            "",
            &[HOST, STAMP, ("X-Amz-Security-Token", TOKEN)],
            b"",
            Some(TOKEN),
        );
        assert_eq!(s.signed_headers, "host;x-amz-date;x-amz-security-token");
        assert_eq!(
            s.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6"
        );
        assert_eq!(
            s.signature,
            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
        );
    }

    /// The worked example of the AWS General Reference ("Examples of the
    /// complete Signature Version 4 signing process"): IAM ListUsers with
    /// the Query API's content type, and its derived signing key.
    #[test]
    fn sigv4_general_reference_iam_example() {
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&key),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        let s = sign(
            &suite_creds(None),
            "us-east-1",
            "iam",
            DATE,
            &Request {
                method: "GET",
                path: "/",
                query: "Action=ListUsers&Version=2010-05-08",
                headers: &[
                    ("Content-Type", FORM_CONTENT_TYPE),
                    ("Host", "iam.amazonaws.com"),
                    STAMP,
                ],
                body: b"",
            },
        );
        assert_eq!(
            sha256_hex(s.canonical_request.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        assert_eq!(
            s.signature,
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_names_merged() {
        let a = suite(
            "GET",
            "",
            &[HOST, STAMP, ("My-Header1", "  a   b ")],
            b"",
            None,
        );
        let b = suite("GET", "", &[HOST, ("my-header1", "a b"), STAMP], b"", None);
        assert_eq!(a.signature, b.signature);
        assert!(a.canonical_request.contains("my-header1:a b\n"));
    }

    #[test]
    fn ec2_request_shape() {
        let body = ec2_body(
            "AssignPrivateIpAddresses",
            &[
                ("NetworkInterfaceId", "eni-1"),
                ("PrivateIpAddress.1", "10.0.0.5"),
                ("AllowReassignment", "true"),
            ],
        );
        assert_eq!(
            body,
            "Action=AssignPrivateIpAddresses&Version=2016-11-15&NetworkInterfaceId=eni-1&PrivateIpAddress.1=10.0.0.5&AllowReassignment=true"
        );
        let h = ec2_headers(
            &suite_creds(Some("tok")),
            "eu-west-1",
            "ec2.eu-west-1.amazonaws.com",
            &body,
            DATE,
        );
        let names: Vec<&str> = h.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "Content-Type",
                "X-Amz-Date",
                "X-Amz-Security-Token",
                "Authorization"
            ]
        );
        let auth = &h[3].1;
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/ec2/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        ));
        assert_eq!(uri_encode("a b/+=~"), "a%20b%2F%2B%3D~");
    }

    #[test]
    fn amz_date_formats_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), DATE);
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // A leap day.
        let t = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(amz_date(t), "20000229T000000Z");
    }
}
