//! Series that enter the scrape with their first non-zero value.
//!
//! A daemon with a thousand sources, most of them idle, would otherwise export a thousand copies
//! of every zero: reconnects that never happened, pages of a kind that does not poll, each error
//! kind of each source. A [`Lazy`] handle holds no series until it first counts; then it looks
//! its series up once and counts on it from then on, as an eager handle does. A handle of a
//! family that does not apply to its source's kind never makes a series.
//!
//! The cost is Prometheus's first-occurrence blind spot: `increase()` over a series that appears
//! at 1 sees no increase. The alert rules in `deploy/prometheus/alerts.yml` that watch such
//! families also fire on a series that is new (see `TributaryDeadLetters`).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, OnceLock,
};

use prometheus::{Counter, CounterVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

/// A family labelled by `source` alone.
pub trait Family: Clone + Send + Sync + 'static {
    /// One series of the family.
    type Series: Send + Sync;
    /// The series for `source`, made if it was not.
    fn series(&self, source: &str) -> Self::Series;
}

macro_rules! family {
    ($vec:ty, $series:ty) => {
        impl Family for $vec {
            type Series = $series;
            fn series(&self, source: &str) -> $series {
                self.with_label_values(&[source])
            }
        }
    };
}
family!(IntCounterVec, IntCounter);
family!(CounterVec, Counter);
family!(IntGaugeVec, IntGauge);

/// Whether a source's series may still be made: cleared by
/// [`super::Metrics::remove_source`], so that the handles its stopped tasks still hold
/// cannot bring its series back.
pub(super) type Live = Arc<AtomicBool>;

/// A handle on one series of a family labelled by `source` alone, made on first use.
pub struct Lazy<T: Family> {
    inner: Arc<Inner<T>>,
}

impl<T: Family> Clone for Lazy<T> {
    fn clone(&self) -> Self {
        Lazy {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<T: Family> {
    /// The family and the source's name; `None` when the family does not apply to the source's
    /// kind.
    family: Option<(T, Arc<str>)>,
    live: Live,
    /// The series, once made (`None` inside: the source was removed first).
    series: OnceLock<Option<T::Series>>,
}

impl<T: Family> Lazy<T> {
    /// A handle on `family`'s series for `source`, made on its first non-zero value; with
    /// `applies` false, a handle that counts nowhere.
    pub(super) fn new(family: &T, source: &Arc<str>, applies: bool, live: &Live) -> Self {
        Lazy {
            inner: Arc::new(Inner {
                family: applies.then(|| (family.clone(), Arc::clone(source))),
                live: Arc::clone(live),
                series: OnceLock::new(),
            }),
        }
    }

    /// The series, made now if it was not.
    fn made(&self) -> Option<&T::Series> {
        let (family, source) = self.inner.family.as_ref()?;
        self.inner
            .series
            .get_or_init(|| {
                self.inner
                    .live
                    .load(Ordering::Acquire)
                    .then(|| family.series(source))
            })
            .as_ref()
    }

    /// The series if it was made.
    fn existing(&self) -> Option<&T::Series> {
        self.inner.series.get().and_then(Option::as_ref)
    }
}

/// A counter series, made on its first increment.
pub type LazyCounter = Lazy<IntCounterVec>;
/// A float counter series (seconds), made on its first increment.
pub type LazyFloatCounter = Lazy<CounterVec>;
/// A gauge series, made on its first non-zero value.
pub type LazyGauge = Lazy<IntGaugeVec>;

impl LazyCounter {
    /// Adds 1.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n` (nothing is made for 0).
    pub fn inc_by(&self, n: u64) {
        if n > 0 {
            if let Some(series) = self.made() {
                IntCounter::inc_by(series, n);
            }
        }
    }

    /// The count (0 before the series is made).
    pub fn get(&self) -> u64 {
        self.existing().map_or(0, IntCounter::get)
    }
}

impl LazyFloatCounter {
    /// Adds `v` (nothing is made for 0 or less).
    pub fn inc_by(&self, v: f64) {
        if v > 0.0 {
            if let Some(series) = self.made() {
                Counter::inc_by(series, v);
            }
        }
    }

    /// The count (0 before the series is made).
    pub fn get(&self) -> f64 {
        self.existing().map_or(0.0, Counter::get)
    }
}

impl LazyGauge {
    /// Sets the value (a 0 makes no series; an existing one is set to 0).
    pub fn set(&self, v: i64) {
        match self.existing() {
            Some(series) => series.set(v),
            None if v != 0 => {
                if let Some(series) = self.made() {
                    series.set(v);
                }
            }
            None => {}
        }
    }

    /// Sets the value, making the series now even for 0.
    pub fn show(&self, v: i64) {
        if let Some(series) = self.made() {
            series.set(v);
        }
    }

    /// Adds `v` (may be negative).
    pub fn add(&self, v: i64) {
        if v != 0 {
            if let Some(series) = self.made() {
                IntGauge::add(series, v);
            }
        }
    }

    /// Subtracts `v`.
    pub fn sub(&self, v: i64) {
        self.add(-v);
    }

    /// Adds 1.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts 1.
    pub fn dec(&self) {
        self.add(-1);
    }

    /// The value (0 before the series is made).
    pub fn get(&self) -> i64 {
        self.existing().map_or(0, IntGauge::get)
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{core::Collector, Opts};

    use super::*;

    fn live() -> Live {
        Arc::new(AtomicBool::new(true))
    }

    #[test]
    fn a_series_appears_with_its_first_count_only() {
        let family = IntCounterVec::new(Opts::new("c", "c"), &["source"]).unwrap();
        let counter = LazyCounter::new(&family, &Arc::from("s"), true, &live());
        counter.inc_by(0);
        assert_eq!(family.collect()[0].get_metric().len(), 0);
        counter.inc_by(3);
        counter.clone().inc();
        assert_eq!(family.with_label_values(&["s"]).get(), 4);
        assert_eq!(counter.get(), 4);
    }

    #[test]
    fn a_gauge_appears_when_it_leaves_zero_and_stays() {
        let family = IntGaugeVec::new(Opts::new("g", "g"), &["source"]).unwrap();
        let gauge = LazyGauge::new(&family, &Arc::from("s"), true, &live());
        gauge.set(0);
        assert_eq!(family.collect()[0].get_metric().len(), 0);
        gauge.inc();
        gauge.dec();
        assert_eq!(family.collect()[0].get_metric().len(), 1);
        gauge.set(7);
        gauge.set(0);
        assert_eq!(family.with_label_values(&["s"]).get(), 0);
    }

    #[test]
    fn a_family_that_does_not_apply_or_a_removed_source_makes_nothing() {
        let family = IntCounterVec::new(Opts::new("c", "c"), &["source"]).unwrap();
        let removed = live();
        removed.store(false, Ordering::Release);
        LazyCounter::new(&family, &Arc::from("a"), false, &live()).inc();
        LazyCounter::new(&family, &Arc::from("b"), true, &removed).inc();
        assert_eq!(family.collect()[0].get_metric().len(), 0);
    }
}
