//! Auth's answers to `Check`, kept for a short time, keyed by token and
//! endpoint, so that a client's calls in a row cost one round trip to auth
//! instead of one each.
//!
//! It is only as current as the revocation feed, and answers only while
//! the feed is: [`crate::access_watch`] drops a user's entries as soon as
//! the feed names the user (a deletion, a role or password change, an
//! ended session, a rename), and every entry on a resync (a reconnect, or
//! auth's access rules changing). Nothing is kept or answered while the
//! feed has been silent for longer than [`FEED_BOUND`], and no answer is
//! kept that was asked for before the feed last named anyone: the feed may
//! have named its user meanwhile. Nor is one kept for a user the feed
//! named in the last [`NAMED_WINDOW`], which another auth replica, not yet
//! told, might still allow: auth's replicas fail closed once they are
//! staler than that. An entry ends with its token, and after the
//! configured lifetime, whichever is first. At most [`MAX_ENTRIES`] are
//! kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use tokio::time::Instant;

use crate::domain::Caller;

/// The most entries kept; past it, expired ones go, then all.
pub const MAX_ENTRIES: usize = 10_000;
/// How long the feed may be silent (it beats every second) before the
/// cache neither answers nor keeps anything.
pub const FEED_BOUND: Duration = Duration::from_secs(2);
/// How long a user named by the feed is not cached: longer than any auth
/// replica may answer from state that has not heard of it (auth's
/// `AUTH_POLICY_MAX_STALENESS_MS`, 5 s by default, at most
/// [`host::notifications::MAX_STALENESS`]).
pub const NAMED_WINDOW: Duration =
    Duration::from_secs(host::notifications::MAX_STALENESS.as_secs() + 1);
/// Longer tokens are not kept.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The token of `authorization: Bearer <token>`, as it is kept: the
/// scheme's case and the spaces around the token make no new entry.
fn token_of(authorization: Option<&HeaderValue>) -> Option<&[u8]> {
    let value = authorization?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, token) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty() && token.len() <= MAX_TOKEN_BYTES).then_some(token)
}

pub(crate) struct AccessCache {
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Token (the `authorization` value) to endpoint to entry.
    entries: HashMap<Vec<u8>, HashMap<String, Entry>>,
    count: usize,
    /// Moves whenever the feed names anyone, or resyncs.
    generation: u64,
    /// Users the feed named, and when.
    named: HashMap<i64, Instant>,
    /// Nothing is kept before this: after a resync, any auth replica may
    /// still answer from state that has not heard what the resync says.
    blocked_until: Option<Instant>,
}

struct Entry {
    caller: Caller,
    until: Instant,
}

/// Where the cache was when a `Check` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation(u64);

impl AccessCache {
    /// A cache keeping answers for `ttl`; zero keeps none.
    pub(crate) fn new(ttl: Duration) -> AccessCache {
        AccessCache {
            ttl,
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer kept for this token and endpoint, if any and the feed is
    /// live.
    pub(crate) fn get(
        &self,
        authorization: Option<&HeaderValue>,
        endpoint: &str,
        feed_live: bool,
    ) -> Option<Caller> {
        if self.ttl.is_zero() || !feed_live {
            return None;
        }
        let token = token_of(authorization)?;
        let inner = self.inner();
        let entry = inner.entries.get(token)?.get(endpoint)?;
        (entry.until > Instant::now()).then(|| entry.caller.clone())
    }

    /// The generation now; taken before asking `Check`.
    pub(crate) fn generation(&self) -> Generation {
        Generation(self.inner().generation)
    }

    /// Keeps `caller`, auth's answer for this token and endpoint, asked for
    /// at `asked_at`, unless the feed moved since or is not live.
    pub(crate) fn put(
        &self,
        asked_at: Generation,
        authorization: Option<&HeaderValue>,
        endpoint: &str,
        caller: &Caller,
        feed_live: bool,
    ) {
        let Some(token) = token_of(authorization) else {
            return;
        };
        if self.ttl.is_zero() || !feed_live {
            return;
        }
        let now = Instant::now();
        let mut until = now + self.ttl;
        if let Some(expires_at) = caller.expires_at {
            let left = expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            until = until.min(now + left);
        }
        let mut inner = self.inner();
        if inner.generation != asked_at.0 || inner.blocked_until.is_some_and(|until| now < until) {
            return;
        }
        let user = caller.user_id.get();
        if inner
            .named
            .get(&user)
            .is_some_and(|named| now.duration_since(*named) < NAMED_WINDOW)
        {
            return;
        }
        if inner.count >= MAX_ENTRIES {
            inner.forget_expired(now);
            // Not a scan per insert while nearly full: if few went, all go.
            if inner.count >= MAX_ENTRIES * 9 / 10 {
                inner.entries.clear();
                inner.count = 0;
            }
        }
        let endpoints = inner.entries.entry(token.to_vec()).or_default();
        let added = endpoints
            .insert(
                endpoint.to_owned(),
                Entry {
                    caller: caller.clone(),
                    until,
                },
            )
            .is_none();
        if added {
            inner.count += 1;
        }
    }

    /// Drops the entries of `users`, whom the feed just named, and keeps
    /// none of theirs for a while.
    pub(crate) fn forget_users(&self, users: impl IntoIterator<Item = i64>) {
        let now = Instant::now();
        let mut inner = self.inner();
        inner.generation += 1;
        inner
            .named
            .retain(|_, named| now.duration_since(*named) < NAMED_WINDOW);
        let mut any = false;
        for user in users {
            inner.named.insert(user, now);
            any = true;
        }
        if !any {
            return;
        }
        let named = std::mem::take(&mut inner.named);
        inner.retain(|entry| !named.contains_key(&entry.caller.user_id.get()));
        inner.named = named;
    }

    /// Drops every entry (a resync: anything may have changed; or the feed
    /// was lost); with `block`, keeps none for [`NAMED_WINDOW`] either, as
    /// not every auth replica may have heard what changed.
    pub(crate) fn clear(&self, block: bool) {
        let mut inner = self.inner();
        inner.generation += 1;
        inner.entries.clear();
        inner.count = 0;
        if block {
            inner.blocked_until = Some(Instant::now() + NAMED_WINDOW);
        }
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner().count
    }
}

impl Inner {
    fn retain(&mut self, keep: impl Fn(&Entry) -> bool) {
        let mut count = 0;
        self.entries.retain(|_, endpoints| {
            endpoints.retain(|_, entry| keep(entry));
            count += endpoints.len();
            !endpoints.is_empty()
        });
        self.count = count;
    }

    fn forget_expired(&mut self, now: Instant) {
        self.retain(|entry| entry.until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn caller(user: i64) -> Caller {
        Caller {
            user_id: UserId::new(user),
            username: format!("user{user}"),
            is_admin: false,
            expires_at: Some(SystemTime::now() + Duration::from_secs(300)),
            token_version: 0,
            session: None,
        }
    }

    fn token(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).expect("a header value")
    }

    #[test]
    fn an_answer_is_kept_per_token_and_endpoint_while_the_feed_is_live() {
        let cache = AccessCache::new(Duration::from_secs(30));
        let (ada, grace) = (token("Bearer a"), token("Bearer g"));
        let asked = cache.generation();
        cache.put(asked, Some(&ada), "/x/Send", &caller(1), true);
        let user = |found: Option<Caller>| found.map(|caller| caller.user_id.get());
        assert_eq!(user(cache.get(Some(&ada), "/x/Send", true)), Some(1));
        assert_eq!(cache.get(Some(&ada), "/x/Other", true), None);
        assert_eq!(cache.get(Some(&grace), "/x/Send", true), None);
        assert_eq!(cache.get(None, "/x/Send", true), None);
        assert_eq!(cache.get(Some(&ada), "/x/Send", false), None, "feed silent");
        cache.put(asked, Some(&grace), "/x/Send", &caller(2), false);
        assert_eq!(cache.len(), 1, "nothing kept while the feed is silent");
    }

    #[test]
    fn the_feed_naming_a_user_drops_theirs_and_stale_answers_are_not_kept() {
        let cache = AccessCache::new(Duration::from_secs(30));
        let (ada, grace) = (token("Bearer a"), token("Bearer g"));
        let asked = cache.generation();
        cache.put(asked, Some(&ada), "/x/Send", &caller(1), true);
        cache.put(asked, Some(&grace), "/x/Send", &caller(2), true);
        // A check asked for before the feed named ada answers after it.
        let before = cache.generation();
        cache.forget_users([1]);
        assert_eq!(cache.get(Some(&ada), "/x/Send", true), None);
        let user = |found: Option<Caller>| found.map(|caller| caller.user_id.get());
        assert_eq!(user(cache.get(Some(&grace), "/x/Send", true)), Some(2));
        cache.put(before, Some(&grace), "/x/Other", &caller(2), true);
        assert_eq!(
            cache.get(Some(&grace), "/x/Other", true),
            None,
            "asked before the feed moved"
        );
        // Ada, just named, is not kept even from a check asked for after.
        cache.put(cache.generation(), Some(&ada), "/x/Send", &caller(1), true);
        assert_eq!(cache.get(Some(&ada), "/x/Send", true), None);
        cache.clear(false);
        assert_eq!(cache.len(), 0);
        cache.put(
            cache.generation(),
            Some(&grace),
            "/x/Send",
            &caller(2),
            true,
        );
        assert_eq!(cache.len(), 1);
        // After a later resync nothing is kept for a while, whoever it is
        // for.
        cache.clear(true);
        cache.put(
            cache.generation(),
            Some(&grace),
            "/x/Send",
            &caller(2),
            true,
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_token_is_kept_once_however_its_header_is_spelt() {
        let cache = AccessCache::new(Duration::from_secs(30));
        cache.put(
            cache.generation(),
            Some(&token("Bearer a")),
            "/x",
            &caller(1),
            true,
        );
        for spelt in ["bearer a", "BEARER   a", "Bearer a  "] {
            assert!(
                cache.get(Some(&token(spelt)), "/x", true).is_some(),
                "{spelt}"
            );
            cache.put(
                cache.generation(),
                Some(&token(spelt)),
                "/x",
                &caller(1),
                true,
            );
        }
        assert_eq!(cache.len(), 1);
        for not_kept in ["Basic a", "Bearer", "a"] {
            cache.put(
                cache.generation(),
                Some(&token(not_kept)),
                "/x",
                &caller(1),
                true,
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        cache.put(
            cache.generation(),
            Some(&token(&long)),
            "/x",
            &caller(1),
            true,
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_entry_ends_with_its_token_and_the_cache_is_bounded() {
        let cache = AccessCache::new(Duration::from_secs(30));
        let expiring = Caller {
            expires_at: Some(SystemTime::now()),
            ..caller(1)
        };
        cache.put(
            cache.generation(),
            Some(&token("Bearer a")),
            "/x",
            &expiring,
            true,
        );
        assert_eq!(cache.get(Some(&token("Bearer a")), "/x", true), None);
        for n in 0..MAX_ENTRIES + 10 {
            cache.put(
                cache.generation(),
                Some(&token(&format!("Bearer {n}"))),
                "/x",
                &caller(2),
                true,
            );
        }
        assert!(cache.len() <= MAX_ENTRIES);
        let off = AccessCache::new(Duration::ZERO);
        off.put(
            off.generation(),
            Some(&token("Bearer a")),
            "/x",
            &caller(1),
            true,
        );
        assert_eq!(off.len(), 0);
    }
}
