//! Quotas: token buckets per caller (a user, a client address), held in
//! memory by each replica. A bucket holds up to `burst` tokens and gains
//! `per_second` a second; each call takes what it costs, and a call that
//! finds too few is refused with `RESOURCE_EXHAUSTED` and a `RetryInfo`
//! saying when enough will be there. So a person typing never meets a
//! quota, and a bot may burst, then goes at the sustained rate.
//!
//! Quotas are per replica: with N replicas behind a balancer, a caller's
//! effective limit is up to N times the configured one.
//!
//! Buckets are bounded: a full bucket is the same as none, so full ones
//! are forgotten when the map reaches its bound; if every bucket is in
//! use, all are forgotten (every caller starts over with a full bucket),
//! which is counted.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use prometheus::{IntCounterVec, Opts, Registry};

use crate::config::Vars;
use crate::error::{Error, Limit};

/// A quota's size: how many calls at once, and how many a second after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl Rate {
    pub const fn new(burst: u32, per_second: f64) -> Rate {
        Rate { burst, per_second }
    }

    /// `burst/per_second`, say `30/0.5`; `off` for no limit.
    pub fn parse(text: &str) -> anyhow::Result<Option<Rate>> {
        if text.trim() == "off" {
            return Ok(None);
        }
        let (burst, per_second) = text
            .split_once('/')
            .context("a quota looks like BURST/PER_SECOND (30/0.5), or off")?;
        let rate = Rate {
            burst: burst
                .trim()
                .parse()
                .context("a quota's burst is a whole number")?,
            per_second: per_second
                .trim()
                .parse()
                .context("a quota's rate is a number per second")?,
        };
        if rate.burst == 0 || !(rate.per_second > 0.0 && rate.per_second.is_finite()) {
            bail!("a quota needs a burst of at least 1 and a rate above 0");
        }
        Ok(Some(rate))
    }

    /// What [`Rate::parse`] reads.
    pub fn to_text(rate: Option<Rate>) -> String {
        match rate {
            Some(rate) => format!("{}/{}", rate.burst, rate.per_second),
            None => "off".to_owned(),
        }
    }
}

/// A quota from the variable `name` (`BURST/PER_SECOND` or `off`), else
/// `default`.
pub fn rate_var(
    var: &impl Vars,
    name: &str,
    default: Option<Rate>,
) -> anyhow::Result<Option<Rate>> {
    match var(name) {
        Some(text) => Rate::parse(&text).with_context(|| name.to_owned()),
        None => Ok(default),
    }
}

/// Counts refusals per quota, in one series per quota name.
#[derive(Clone)]
pub struct QuotaMetrics {
    refused: IntCounterVec,
    forgotten: IntCounterVec,
}

impl QuotaMetrics {
    /// `<service>_quota_refusals_total{quota}` and
    /// `<service>_quota_buckets_reset_total{quota}`, registered.
    pub fn register(registry: &Registry, service: &str) -> anyhow::Result<QuotaMetrics> {
        let refused = IntCounterVec::new(
            Opts::new(
                format!("{service}_quota_refusals_total"),
                "Calls refused with RESOURCE_EXHAUSTED because their caller's quota was used up.",
            ),
            &["quota"],
        )?;
        let forgotten = IntCounterVec::new(
            Opts::new(
                format!("{service}_quota_buckets_reset_total"),
                "Times a quota held as many callers as it may and started every one over.",
            ),
            &["quota"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(forgotten.clone()))?;
        Ok(QuotaMetrics { refused, forgotten })
    }
}

/// The most callers one quota remembers at once.
pub const MAX_BUCKETS: usize = 100_000;

/// One quota over callers of type `K`; `None` rate: unlimited.
pub struct Quota<K> {
    name: &'static str,
    /// What the caller is told the quota is on (`messages sent`).
    what: &'static str,
    rate: Option<Rate>,
    buckets: Mutex<HashMap<K, Bucket>>,
    max_buckets: usize,
    metrics: QuotaMetrics,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> Quota<K> {
    pub fn new(
        name: &'static str,
        what: &'static str,
        rate: Option<Rate>,
        metrics: &QuotaMetrics,
    ) -> Arc<Quota<K>> {
        Quota::bounded(name, what, rate, metrics, MAX_BUCKETS)
    }

    pub fn bounded(
        name: &'static str,
        what: &'static str,
        rate: Option<Rate>,
        metrics: &QuotaMetrics,
        max_buckets: usize,
    ) -> Arc<Quota<K>> {
        // Every series exists from the start, at 0.
        metrics.refused.with_label_values(&[name]);
        Arc::new(Quota {
            name,
            what,
            rate,
            buckets: Mutex::default(),
            max_buckets: max_buckets.max(1),
            metrics: metrics.clone(),
        })
    }

    /// Takes `cost` tokens from `key`'s bucket, or refuses with the time
    /// until they would be there. A cost above the burst is refused for
    /// good (no wait makes it fit): the caller must split it.
    pub fn take(&self, key: &K, cost: u32) -> Result<(), Error> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let now = Instant::now();
        let burst = f64::from(rate.burst);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.max_buckets {
            buckets.retain(|_, bucket| bucket.level(now, rate) < burst);
            if buckets.len() >= self.max_buckets {
                // Still full: the fuller half goes (those who took least
                // lately), never the emptiest, whose callers are the ones
                // being held back.
                let mut levels: Vec<f64> = buckets
                    .values()
                    .map(|bucket| bucket.level(now, rate))
                    .collect();
                levels.sort_by(f64::total_cmp);
                let keep_below = levels[levels.len() / 2];
                let mut kept = 0;
                buckets.retain(|_, bucket| {
                    let keep = bucket.level(now, rate) < keep_below
                        || (bucket.level(now, rate) == keep_below && kept < levels.len() / 2);
                    kept += usize::from(keep);
                    keep
                });
                self.metrics.forgotten.with_label_values(&[self.name]).inc();
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let level = bucket.level(now, rate);
        let cost = f64::from(cost);
        if level >= cost {
            *bucket = Bucket {
                tokens: level - cost,
                at: now,
            };
            return Ok(());
        }
        drop(buckets);
        self.metrics.refused.with_label_values(&[self.name]).inc();
        if cost > burst {
            return Err(Error::ResourceExhausted {
                limit: Limit::Quota,
                message: format!(
                    "{} at once are more than the quota of {} allows",
                    cost, rate.burst
                ),
                retry_after: None,
            });
        }
        let wait = Duration::from_secs_f64(((cost - level) / rate.per_second).max(0.001));
        Err(Error::ResourceExhausted {
            limit: Limit::Quota,
            message: format!(
                "quota of {} used up ({} at once, then {} a second): try again in {:.1} s",
                self.what,
                rate.burst,
                rate.per_second,
                wait.as_secs_f64()
            ),
            retry_after: Some(wait),
        })
    }

    /// Callers remembered now.
    pub fn remembered(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl Bucket {
    fn level(&self, now: Instant, rate: Rate) -> f64 {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_second;
        (self.tokens + gained).min(f64::from(rate.burst))
    }
}

/// Streams open at once per caller: a count, not a rate. A slot is held
/// until its [`Slot`] is dropped; callers with none open are forgotten.
pub struct Slots<K: Hash + Eq + Clone> {
    name: &'static str,
    most: Option<u32>,
    open: Mutex<HashMap<K, u32>>,
    metrics: QuotaMetrics,
    retry_after: Duration,
}

/// One open slot; freed on drop.
pub struct Slot<K: Hash + Eq + Clone> {
    slots: Option<Arc<Slots<K>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    pub fn new(
        name: &'static str,
        most: Option<u32>,
        metrics: &QuotaMetrics,
        retry_after: Duration,
    ) -> Arc<Slots<K>> {
        metrics.refused.with_label_values(&[name]);
        Arc::new(Slots {
            name,
            most,
            open: Mutex::default(),
            metrics: metrics.clone(),
            retry_after,
        })
    }

    /// A slot for `key`, or a refusal if it holds as many as it may.
    pub fn open(self: &Arc<Self>, key: &K) -> Result<Slot<K>, Error> {
        let Some(most) = self.most else {
            return Ok(Slot {
                slots: None,
                key: key.clone(),
            });
        };
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = open.entry(key.clone()).or_insert(0);
        if *held >= most {
            drop(open);
            self.metrics.refused.with_label_values(&[self.name]).inc();
            return Err(Error::ResourceExhausted {
                limit: Limit::Quota,
                message: format!(
                    "{most} streams are open for this user already: close one, or try again in {} s",
                    self.retry_after.as_secs().max(1)
                ),
                retry_after: Some(self.retry_after),
            });
        }
        *held += 1;
        Ok(Slot {
            slots: Some(self.clone()),
            key: key.clone(),
        })
    }

    /// Callers holding a slot now.
    pub fn holders(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let Some(slots) = self.slots.take() else {
            return;
        };
        let mut open = slots
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = open.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> QuotaMetrics {
        QuotaMetrics::register(&Registry::new(), "test").expect("metrics")
    }

    #[test]
    fn a_burst_then_the_sustained_rate_with_a_retry_delay() {
        let quota = Quota::new("sends", "messages", Some(Rate::new(3, 1.0)), &metrics());
        for _ in 0..3 {
            quota.take(&1, 1).expect("within the burst");
        }
        match quota.take(&1, 1) {
            Err(Error::ResourceExhausted {
                limit: Limit::Quota,
                retry_after: Some(wait),
                ..
            }) => assert!(
                wait > Duration::ZERO && wait <= Duration::from_secs(1),
                "{wait:?}"
            ),
            other => panic!("not refused with a delay: {other:?}"),
        }
        // Another caller is untouched.
        quota.take(&2, 3).expect("another caller's burst");
    }

    #[test]
    fn a_cost_beyond_the_burst_is_refused_without_a_delay() {
        let quota = Quota::new("members", "members", Some(Rate::new(5, 1.0)), &metrics());
        assert!(matches!(
            quota.take(&1, 6),
            Err(Error::ResourceExhausted {
                retry_after: None,
                ..
            })
        ));
        quota.take(&1, 5).expect("the burst itself");
    }

    #[test]
    fn buckets_are_bounded() {
        let quota = Quota::bounded("sends", "messages", Some(Rate::new(2, 1.0)), &metrics(), 10);
        for caller in 0..1000 {
            quota.take(&caller, 1).expect("a new caller");
            assert!(quota.remembered() <= 10);
        }
    }

    /// A full table forgets those who took least, never the one held
    /// back: a flood of new callers does not refill an abuser's bucket.
    #[test]
    fn a_full_table_keeps_the_emptiest_buckets() {
        let quota = Quota::bounded(
            "sends",
            "messages",
            Some(Rate::new(4, 0.001)),
            &metrics(),
            10,
        );
        for _ in 0..4 {
            quota.take(&0, 1).expect("the abuser's burst");
        }
        assert!(quota.take(&0, 1).is_err(), "the abuser is held back");
        for caller in 1..1000 {
            quota.take(&caller, 1).expect("a new caller");
            assert!(quota.remembered() <= 10);
        }
        assert!(quota.take(&0, 1).is_err(), "the flood refilled the abuser");
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(
            Rate::parse("30/0.5").expect("parses"),
            Some(Rate::new(30, 0.5))
        );
        assert_eq!(Rate::parse("off").expect("parses"), None);
        for bad in ["30", "0/1", "3/0", "3/-1", "x/1", "3/inf"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Rate::parse(&Rate::to_text(Some(Rate::new(7, 0.25)))).expect("round trip"),
            Some(Rate::new(7, 0.25))
        );
    }

    #[test]
    fn slots_are_held_until_dropped_and_forgotten_at_zero() {
        let slots = Slots::new("streams", Some(2), &metrics(), Duration::from_secs(5));
        let first = slots.open(&1).expect("one");
        let _second = slots.open(&1).expect("two");
        assert!(slots.open(&1).is_err(), "a third");
        slots.open(&2).map(drop).expect("another user");
        drop(first);
        let _third = slots.open(&1).expect("freed");
        assert_eq!(slots.holders(), 1);
    }
}
