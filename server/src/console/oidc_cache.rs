//! The identity provider's discovery document and key set, fetched once and shared by every
//! single sign-on (`oidc.rs`).
//!
//! `GET /login/oidc` needs no authentication, so fetching the provider's metadata for each one
//! would let anyone make the console hammer the provider. Instead the metadata (with its key
//! set) is kept for [`METADATA_TTL`]; logins that find it cold or stale wait on one fetch (the
//! lock is held across it), so a burst of them costs the provider one discovery and one key set
//! request. A failed fetch is remembered for [`FAILURE_TTL`] and its reason given to every
//! login in that time, so a provider that is down is not retried per request either.
//!
//! A provider rotates its signing key by publishing the new key and then signing with it; an ID
//! token whose key is not in the cached set makes the console fetch the key set again
//! ([`Cache::refresh_keys`]), but at most once per [`KEYS_MIN_INTERVAL`], so tokens forged with
//! made-up key ids cannot force a fetch each.
//!
//! Every method takes the time (`now`) from its caller: the tests age the cache without
//! waiting.

use super::oidc::error_chain;
use super::oidc_http::Http;
use super::oidc_refusal::ProviderError;
use openidconnect::IssuerUrl;
use openidconnect::core::{CoreJsonWebKeySet, CoreProviderMetadata};
use std::time::{Duration, Instant};

/// How long fetched metadata and keys are used before the next login fetches them again.
pub const METADATA_TTL: Duration = Duration::from_secs(5 * 60);
/// The shortest time between two fetches of the key set.
pub const KEYS_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// How long a failed fetch answers for the provider before the next login tries again.
pub const FAILURE_TTL: Duration = Duration::from_secs(5);

/// The cached metadata of one provider.
#[derive(Debug)]
pub struct Cache {
    issuer: IssuerUrl,
    inner: tokio::sync::Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    /// The metadata with its key set, and when the discovery document was fetched.
    meta: Option<(CoreProviderMetadata, Instant)>,
    /// When the key set was last fetched (or its fetch last tried).
    keys_at: Option<Instant>,
    /// The last fetch's failure and when it happened.
    failed: Option<(ProviderError, Instant)>,
}

/// Whether `then` is less than `ttl` before `now`.
fn within(then: Instant, now: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(then) < ttl
}

impl Cache {
    pub fn new(issuer: IssuerUrl) -> Self {
        Self {
            issuer,
            inner: tokio::sync::Mutex::default(),
        }
    }

    fn unusable(&self, e: &dyn std::error::Error) -> ProviderError {
        ProviderError::Unusable {
            issuer: self.issuer.as_str().to_string(),
            cause: error_chain(e),
        }
    }

    /// The provider's metadata and key set: cached, or fetched if the cache is cold or older
    /// than [`METADATA_TTL`]. The error is the reason for the login page.
    pub async fn metadata(
        &self,
        http: &Http,
        now: Instant,
    ) -> Result<CoreProviderMetadata, ProviderError> {
        let mut c = self.inner.lock().await;
        if let Some((meta, at)) = &c.meta
            && within(*at, now, METADATA_TTL)
        {
            return Ok(meta.clone());
        }
        if let Some((why, at)) = &c.failed
            && within(*at, now, FAILURE_TTL)
        {
            return Err(why.clone());
        }
        match CoreProviderMetadata::discover_async(self.issuer.clone(), http).await {
            Ok(meta) => {
                c.meta = Some((meta.clone(), now));
                c.keys_at = Some(now);
                c.failed = None;
                Ok(meta)
            }
            Err(e) => {
                let why = self.unusable(&e);
                c.failed = Some((why.clone(), now));
                Err(why)
            }
        }
    }

    /// The metadata with a key set fetched anew, for an ID token signed by a key the cached set
    /// lacks; `None` if the key set was fetched less than [`KEYS_MIN_INTERVAL`] ago (the new
    /// set would be the same, or someone is forging key ids). A failed fetch counts as a fetch.
    pub async fn refresh_keys(
        &self,
        http: &Http,
        now: Instant,
    ) -> Result<Option<CoreProviderMetadata>, ProviderError> {
        let mut c = self.inner.lock().await;
        if c.keys_at
            .is_some_and(|at| within(at, now, KEYS_MIN_INTERVAL))
        {
            return Ok(None);
        }
        let Some((meta, at)) = c.meta.clone() else {
            return Ok(None);
        };
        c.keys_at = Some(now);
        let keys = CoreJsonWebKeySet::fetch_async(meta.jwks_uri(), http)
            .await
            .map_err(|e| self.unusable(&e))?;
        let meta = meta.set_jwks(keys);
        c.meta = Some((meta.clone(), at));
        Ok(Some(meta))
    }

    /// Moves every remembered time `by` into the past, as if that much time had gone by.
    #[cfg(test)]
    pub async fn age(&self, by: Duration) {
        let back = |t: Instant| t.checked_sub(by).unwrap_or(t);
        let mut c = self.inner.lock().await;
        if let Some((_, at)) = &mut c.meta {
            *at = back(*at);
        }
        if let Some(at) = &mut c.keys_at {
            *at = back(*at);
        }
        if let Some((_, at)) = &mut c.failed {
            *at = back(*at);
        }
    }
}
