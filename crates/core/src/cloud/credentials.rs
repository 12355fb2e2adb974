//! AWS credentials, sans-IO: where they come from ([`Source`], chosen from
//! the environment as the AWS SDKs' default chain does) and when to fetch
//! them again ([`CredentialCache`], given `now`). The fetching (STS, the
//! instance metadata service, the container endpoint) is
//! `podlb::cloud::credentials`.
//!
//! The refresh rule: temporary credentials are fetched again
//! [`REFRESH_BEFORE`] before they expire, or at half their lifetime when
//! they were issued for less than twice that, so a call is never signed
//! with credentials about to expire. A failed refresh keeps the ones held
//! (while they last) and is retried after a back-off that doubles from
//! [`super::mover::BACKOFF_MIN`] to [`super::mover::BACKOFF_MAX`].

use std::time::{Duration, Instant};

use super::mover::{doubled, BACKOFF_MIN};

/// Fetch temporary credentials again this long before they expire (the AWS
/// SDKs refresh within a few minutes of expiry; IMDS rotates instance
/// profile credentials at least five minutes before).
pub const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Stop signing with credentials this long before they expire (a request
/// signed just before expiry may arrive just after).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// The default endpoint of the ECS / EKS container credentials provider for
/// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
pub const ECS_CONTAINER_HOST: &str = "http://169.254.170.2";

/// Where credentials come from: the first of the AWS SDKs' default chain
/// whose settings are present (the shared config/credentials files are not
/// read: a Pod has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`):
    /// used as they are, never refreshed.
    Environment,
    /// `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` (+
    /// `AWS_ROLE_SESSION_NAME`): STS `AssumeRoleWithWebIdentity` with the
    /// token read from the file on every fetch (IRSA: EKS rotates it).
    WebIdentity {
        role_arn: String,
        token_file: String,
        session_name: Option<String>,
    },
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod Identity, ECS) or
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, with the authorization
    /// token from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read on every
    /// fetch) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    Container {
        uri: String,
        token_file: Option<String>,
        token: Option<String>,
    },
    /// The instance metadata service (IMDSv2): the instance profile's role.
    InstanceMetadata,
    /// `AWS_EC2_METADATA_DISABLED=true` and nothing else set.
    Nothing,
}

impl Source {
    /// The source the environment names (`env` looks a variable up; an
    /// empty value counts as unset), in the SDKs' order: environment, web
    /// identity, container, instance metadata.
    pub fn choose(env: impl Fn(&str) -> Option<String>) -> Source {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if get("AWS_ACCESS_KEY_ID").is_some() && get("AWS_SECRET_ACCESS_KEY").is_some() {
            return Source::Environment;
        }
        if let (Some(role_arn), Some(token_file)) =
            (get("AWS_ROLE_ARN"), get("AWS_WEB_IDENTITY_TOKEN_FILE"))
        {
            return Source::WebIdentity {
                role_arn,
                token_file,
                session_name: get("AWS_ROLE_SESSION_NAME"),
            };
        }
        let uri = get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .map(|rel| format!("{ECS_CONTAINER_HOST}{rel}"))
            .or_else(|| get("AWS_CONTAINER_CREDENTIALS_FULL_URI"));
        if let Some(uri) = uri {
            return Source::Container {
                uri,
                token_file: get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
                token: get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            };
        }
        if get("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Source::Nothing;
        }
        Source::InstanceMetadata
    }

    /// The name /status and the metrics show.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Environment => "environment",
            Source::WebIdentity { .. } => "web-identity",
            Source::Container { .. } => "container",
            Source::InstanceMetadata => "instance-metadata",
            Source::Nothing => "none",
        }
    }
}

struct Held<C> {
    creds: C,
    /// `None`: static credentials (never refreshed, never expire).
    expires_at: Option<Instant>,
    refresh_at: Option<Instant>,
    usable_until: Option<Instant>,
}

/// The credentials held and when to fetch new ones. `C` is whatever the IO
/// side signs with.
pub struct CredentialCache<C> {
    held: Option<Held<C>>,
    /// No fetch before this (back-off after a failure).
    next_try: Instant,
    backoff: Duration,
}

impl<C> CredentialCache<C> {
    /// An empty cache: a fetch is due at once.
    pub fn new(now: Instant) -> CredentialCache<C> {
        CredentialCache {
            held: None,
            next_try: now,
            backoff: BACKOFF_MIN,
        }
    }

    /// The credentials to sign with now, if any are held and not about to
    /// expire.
    pub fn usable(&self, now: Instant) -> Option<&C> {
        let h = self.held.as_ref()?;
        h.usable_until.is_none_or(|u| now < u).then_some(&h.creds)
    }

    /// Whether to fetch now: nothing usable is held (and no back-off
    /// forbids it), or the held credentials reached their refresh time.
    /// Before a call the IO side fetches when nothing is usable even inside
    /// the back-off (the call itself is backed off by the mover).
    pub fn due(&self, now: Instant) -> bool {
        self.next_deadline().is_some_and(|d| now >= d)
    }

    /// When [`CredentialCache::due`] turns true (`None`: never, static
    /// credentials).
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.held {
            None => Some(self.next_try),
            // (The refresh time is before the end of use: a fetch is due
            // before the credentials become unusable.)
            Some(h) => Some(h.refresh_at?.max(self.next_try)),
        }
    }

    /// New credentials, valid for `valid_for` from `now` (`None`: static,
    /// no expiry).
    pub fn on_fetched(&mut self, now: Instant, creds: C, valid_for: Option<Duration>) {
        self.backoff = BACKOFF_MIN;
        self.next_try = now;
        self.held = Some(match valid_for {
            None => Held {
                creds,
                expires_at: None,
                refresh_at: None,
                usable_until: None,
            },
            Some(life) => {
                let expires_at = now + life;
                Held {
                    creds,
                    expires_at: Some(expires_at),
                    refresh_at: Some(expires_at - REFRESH_BEFORE.min(life / 2)),
                    usable_until: Some(expires_at - EXPIRY_MARGIN.min(life / 10)),
                }
            }
        });
    }

    /// A fetch failed: the held credentials stay (while usable); the next
    /// fetch waits the returned back-off.
    pub fn on_failed(&mut self, now: Instant) -> Duration {
        let wait = self.backoff;
        self.next_try = now + wait;
        self.backoff = doubled(wait);
        wait
    }

    /// How long the held credentials last (`None`: none held, or static).
    pub fn expires_in(&self, now: Instant) -> Option<Duration> {
        let e = self.held.as_ref()?.expires_at?;
        Some(e.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_chain_takes_the_first_source_present() {
        let keys = [
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        let web = [
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/podlb"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
        ];
        let all: Vec<_> = keys.iter().chain(&web).copied().collect();
        assert_eq!(Source::choose(env(&all)), Source::Environment);
        // A key without its secret is not the environment source.
        let half: Vec<_> = [keys[0]].iter().chain(&web).copied().collect();
        assert_eq!(
            Source::choose(env(&half)),
            Source::WebIdentity {
                role_arn: "arn:aws:iam::1:role/podlb".into(),
                token_file: "/var/run/token".into(),
                session_name: None,
            }
        );
        let named: Vec<_> = web
            .iter()
            .chain(&[("AWS_ROLE_SESSION_NAME", "lb-1")])
            .copied()
            .collect();
        assert!(matches!(
            Source::choose(env(&named)),
            Source::WebIdentity { session_name: Some(s), .. } if s == "lb-1"
        ));
        // Only the role: not web identity.
        assert_eq!(Source::choose(env(&[web[0]])), Source::InstanceMetadata);
        assert_eq!(
            Source::choose(env(&[
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://169.254.170.23/v1/credentials"
                ),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/t"),
            ])),
            Source::Container {
                uri: "http://169.254.170.23/v1/credentials".into(),
                token_file: Some("/t".into()),
                token: None,
            }
        );
        assert!(matches!(
            Source::choose(env(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds/x")])),
            Source::Container { uri, .. } if uri == "http://169.254.170.2/v2/creds/x"
        ));
        assert_eq!(Source::choose(env(&[])), Source::InstanceMetadata);
        // Empty values are unset.
        assert_eq!(
            Source::choose(env(&[
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", "s")
            ])),
            Source::InstanceMetadata
        );
        assert_eq!(
            Source::choose(env(&[("AWS_EC2_METADATA_DISABLED", "TRUE")])),
            Source::Nothing
        );
        assert_eq!(Source::Nothing.name(), "none");
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn refreshes_five_minutes_before_expiry_or_at_half_life() {
        let t0 = Instant::now();
        let mut c = CredentialCache::new(t0);
        assert!(c.due(t0));
        assert_eq!(c.usable(t0), None);
        // An hour: refreshed at 55 min, usable until 10 s before the end.
        c.on_fetched(t0, "a", Some(3600 * S));
        assert_eq!(c.next_deadline(), Some(t0 + 3300 * S));
        assert!(!c.due(t0 + 3299 * S));
        assert!(c.due(t0 + 3300 * S));
        assert_eq!(c.usable(t0 + 3589 * S), Some(&"a"));
        assert_eq!(c.usable(t0 + 3590 * S), None);
        assert_eq!(c.expires_in(t0 + 600 * S), Some(3000 * S));
        // Eight seconds: refreshed at 4 s, usable until 7.2 s.
        c.on_fetched(t0, "b", Some(8 * S));
        assert_eq!(c.next_deadline(), Some(t0 + 4 * S));
        assert_eq!(c.usable(t0 + 7 * S), Some(&"b"));
        assert_eq!(c.usable(t0 + 7300 * Duration::from_millis(1)), None);
        // Static credentials: never due, never expire.
        c.on_fetched(t0, "k", None);
        assert_eq!(c.next_deadline(), None);
        assert!(!c.due(t0 + 100_000 * S));
        assert_eq!(c.usable(t0 + 100_000 * S), Some(&"k"));
        assert_eq!(c.expires_in(t0), None);
    }

    #[test]
    fn a_failed_refresh_keeps_the_old_credentials_and_backs_off() {
        let t0 = Instant::now();
        let mut c = CredentialCache::new(t0);
        c.on_fetched(t0, 1, Some(600 * S));
        let r = t0 + 300 * S;
        assert!(c.due(r));
        assert_eq!(c.on_failed(r), Duration::from_millis(500));
        assert!(!c.due(r));
        assert_eq!(c.usable(r), Some(&1));
        assert_eq!(c.next_deadline(), Some(r + Duration::from_millis(500)));
        let mut now = r;
        let mut waits = Vec::new();
        for _ in 0..8 {
            now = c.next_deadline().unwrap();
            waits.push(c.on_failed(now).as_millis());
        }
        assert_eq!(waits, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(c.usable(now), Some(&1));
        c.on_fetched(now, 2, Some(600 * S));
        assert_eq!(c.next_deadline(), Some(now + 300 * S));
        assert_eq!(c.on_failed(now), Duration::from_millis(500));
    }

    #[test]
    fn expired_credentials_are_not_used_and_a_fetch_is_due() {
        let t0 = Instant::now();
        let mut c = CredentialCache::new(t0);
        c.on_fetched(t0, 1, Some(100 * S));
        let late = t0 + 200 * S;
        assert_eq!(c.usable(late), None);
        assert!(c.due(late));
        c.on_failed(late);
        assert!(!c.due(late));
        assert!(c.due(late + S));
        // Nothing held at all: the back-off alone decides.
        let mut e: CredentialCache<u8> = CredentialCache::new(t0);
        assert_eq!(e.on_failed(t0), Duration::from_millis(500));
        assert_eq!(e.next_deadline(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(e.expires_in(t0), None);
    }
}
