//! The statistics of paired rounds: this machine's throughput drifts 10-30 % from one run to the
//! next (shared cores), more than the costs measured, so comparisons run in pairs whose order
//! alternates, and report the median of the pairs' ratios.

use std::time::Duration;

/// The median ([`counseling_testkit::fixtures::median`]); `NaN` when empty, or when any value is
/// not finite: a failed round (`NaN`, or a ratio to a reference of 0) has no place in the order,
/// and left in it would move the median up as if it were the best round.
pub fn median(values: &[f64]) -> f64 {
    if values.iter().any(|value| !value.is_finite()) {
        return f64::NAN;
    }
    counseling_testkit::fixtures::median(values).unwrap_or(f64::NAN)
}

/// The mean; `NaN` when empty.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The nearest-rank percentile `p` (0 < p <= 1) of `sorted`: the smallest value that at least
/// `p` of the values do not exceed.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// Runs `first` and `second` in the order of round `round` (1-based): odd rounds first-second,
/// even rounds second-first, so that a drift during the run favours neither.
pub fn in_round_order<T>(
    round: usize,
    mut first: impl FnMut() -> T,
    mut second: impl FnMut() -> T,
) -> (T, T) {
    if round % 2 == 1 {
        let a = first();
        (a, second())
    } else {
        let b = second();
        (first(), b)
    }
}

/// Paired rounds of two measures: each round's values, in the order they were asked for.
#[derive(Debug, Default, Clone)]
pub struct Pairs {
    pub firsts: Vec<f64>,
    pub seconds: Vec<f64>,
}

impl Pairs {
    /// Runs `rounds` rounds of `first` and `second` in alternating order.
    pub fn run(
        rounds: usize,
        mut first: impl FnMut() -> f64,
        mut second: impl FnMut() -> f64,
    ) -> Self {
        let mut pairs = Self::default();
        for round in 1..=rounds {
            let (a, b) = in_round_order(round, &mut first, &mut second);
            pairs.firsts.push(a);
            pairs.seconds.push(b);
        }
        pairs
    }

    /// Each round's `second / first`.
    pub fn ratios(&self) -> Vec<f64> {
        self.firsts
            .iter()
            .zip(&self.seconds)
            .map(|(a, b)| b / a)
            .collect()
    }

    /// The median of the rounds' ratios: the figure to report.
    pub fn median_ratio(&self) -> f64 {
        median(&self.ratios())
    }
}

/// `values` as `0.985, 0.967, ...` (three decimals).
pub fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|value| format!("{value:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn median_mean_and_list() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(
            median(&[4.0, 1.0, 3.0, 2.0]),
            2.0,
            "the lower middle of an even count"
        );
        assert!(median(&[]).is_nan());
        // Two failed rounds must not lift the median of the three others (0.94) to 0.96.
        assert!(median(&[0.93, 0.94, 0.96, f64::NAN, f64::NAN]).is_nan());
        let zero_reference = Pairs {
            firsts: vec![1.0, 0.0, 1.0],
            seconds: vec![0.9, 1.0, 0.95],
        };
        assert!(zero_reference.median_ratio().is_nan());
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        assert_eq!(list(&[0.9854, 1.0]), "0.985, 1.000");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_micros(500));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_micros(990));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_micros(1000));
        let hundred: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&hundred, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        // A rank between two values is rounded up (nearest rank), never down.
        let three: Vec<Duration> = (1..=3).map(Duration::from_millis).collect();
        assert_eq!(percentile(&three, 0.5), Duration::from_millis(2));
        assert_eq!(percentile(&three, 0.9), Duration::from_millis(3));
    }

    #[test]
    fn rounds_alternate_their_order_and_ratios_pair_up() {
        let order = std::cell::RefCell::new(Vec::new());
        let pairs = Pairs::run(
            4,
            || {
                order.borrow_mut().push('a');
                100.0
            },
            || {
                order.borrow_mut().push('b');
                order.borrow().len() as f64 * 10.0
            },
        );
        assert_eq!(order.into_inner(), ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']);
        assert_eq!(pairs.seconds, [20.0, 30.0, 60.0, 70.0]);
        assert_eq!(pairs.ratios(), [0.2, 0.3, 0.6, 0.7]);
        assert_eq!(pairs.median_ratio(), 0.3);
    }
}
