//! A Prometheus scrape, read with a real parser of the text format (`prometheus-parse`), for
//! tests that check what `/metrics` reports.

use std::collections::BTreeSet;

use prometheus_parse::Value;

use crate::{Result, TestkitError};

/// The type a `# TYPE` line gave a metric, as the parser understood it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One parsed scrape.
#[derive(Debug)]
pub struct Scrape {
    parsed: prometheus_parse::Scrape,
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Self> {
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines)
            .map_err(TestkitError::io("parsing the scrape"))?;
        Ok(Self { parsed })
    }

    fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.parsed.samples.iter().filter(move |sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
    }

    /// The sum of the counters or gauges named `name` whose labels include `labels`; 0 when there
    /// are none (a counter nobody incremented yet), so differences of two scrapes are exact.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels)
            .map(|sample| match &sample.value {
                Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => *value,
                Value::Histogram(_) | Value::Summary(_) => 0.0,
            })
            .sum()
    }

    /// How many observations the histograms named `name` with `labels` hold (their `+Inf` bucket).
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels)
            .filter_map(|sample| match &sample.value {
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|bucket| bucket.less_than.is_infinite())
                    .map(|bucket| bucket.count),
                _ => None,
            })
            .sum()
    }

    /// The type of `name`, if the scrape has it.
    pub fn kind(&self, name: &str) -> Option<MetricKind> {
        let sample = self.parsed.samples.iter().find(|s| s.metric == name)?;
        Some(match sample.value {
            Value::Counter(_) => MetricKind::Counter,
            Value::Gauge(_) => MetricKind::Gauge,
            Value::Histogram(_) => MetricKind::Histogram,
            Value::Summary(_) => MetricKind::Summary,
            Value::Untyped(_) => MetricKind::Untyped,
        })
    }

    /// The `# HELP` text of `name`.
    pub fn help(&self, name: &str) -> Option<&str> {
        self.parsed.docs.get(name).map(String::as_str)
    }

    /// Every metric name in the scrape (histograms by their base name).
    pub fn names(&self) -> BTreeSet<&str> {
        self.parsed
            .samples
            .iter()
            .map(|sample| sample.metric.as_str())
            .collect()
    }

    /// Every value the label `label` takes on the metric `name`.
    pub fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples(name, &[])
            .filter_map(|sample| sample.labels.get(label).map(str::to_owned))
            .collect()
    }

    /// How many series (metric name and label set) the scrape holds.
    pub fn series(&self) -> usize {
        self.parsed.samples.len()
    }
}
