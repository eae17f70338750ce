//! The one OTLP metric builder every encoder writes into: cumulative sums, gauges and explicit
//! histograms from plain points, plus the attribute helpers all encoders share.

use super::{resource, snapshot::SidecarSnapshot};
use crate::{clock::unix_nanos, models::ModelKey, stats::ExplicitHistogram};
use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, Sum,
    },
};

/// One data point: the start of its cumulative period (Unix ns), its attributes, its value.
pub(super) type Point<T> = (u64, Vec<KeyValue>, T);

/// Builds the metric list of one export.
pub(super) struct MetricsBuilder {
    /// Start of the process-wide series' cumulative period (Unix ns).
    pub(super) start: u64,
    /// Collection time (Unix ns).
    pub(super) now: u64,
    metrics: Vec<Metric>,
}

impl MetricsBuilder {
    pub(super) fn new(start: u64, now: u64) -> Self {
        Self {
            start,
            now,
            metrics: Vec::new(),
        }
    }

    /// The metrics built, in the order they were pushed.
    pub(super) fn finish(self) -> Vec<Metric> {
        self.metrics
    }

    /// A cumulative floating-point sum (a counter of non-negative amounts).
    pub(super) fn sum_double(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<Point<f64>>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = points
            .into_iter()
            .map(|(start, attributes, value)| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..Default::default()
            })
            .collect();
        self.push(
            name,
            unit,
            description,
            metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        );
    }

    /// A floating-point gauge; points without a value (undefined metrics) are left out.
    pub(super) fn gauge_double(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<Point<Option<f64>>>,
    ) {
        let data_points: Vec<_> = points
            .into_iter()
            .filter_map(|(start, attributes, value)| {
                Some(NumberDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: self.now,
                    value: Some(number_data_point::Value::AsDouble(value?)),
                    ..Default::default()
                })
            })
            .collect();
        if data_points.is_empty() {
            return;
        }
        self.push(
            name,
            unit,
            description,
            metric::Data::Gauge(Gauge { data_points }),
        );
    }

    /// Adds a metric built elsewhere (the fleet's, renamed: `export/quality.rs`).
    pub(super) fn push_metric(&mut self, metric: Metric) {
        self.metrics.push(metric);
    }

    fn push(&mut self, name: &str, unit: &str, description: &str, data: metric::Data) {
        self.metrics.push(Metric {
            name: name.to_owned(),
            description: description.to_owned(),
            unit: unit.to_owned(),
            data: Some(data),
            ..Default::default()
        });
    }

    fn number(&self, start: u64, attributes: Vec<KeyValue>, value: i64) -> NumberDataPoint {
        NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: self.now,
            value: Some(number_data_point::Value::AsInt(value)),
            ..Default::default()
        }
    }

    /// A cumulative sum; monotonic for counters, not for up-down counters.
    pub(super) fn sum(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        monotonic: bool,
        points: Vec<Point<i64>>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = points
            .into_iter()
            .map(|(start, attributes, value)| self.number(start, attributes, value))
            .collect();
        self.push(
            name,
            unit,
            description,
            metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: monotonic,
            }),
        );
    }

    pub(super) fn gauge(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<Point<i64>>,
    ) {
        let data_points = points
            .into_iter()
            .map(|(start, attributes, value)| self.number(start, attributes, value))
            .collect();
        self.push(
            name,
            unit,
            description,
            metric::Data::Gauge(Gauge { data_points }),
        );
    }

    pub(super) fn histogram(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<Point<&ExplicitHistogram>>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = points
            .into_iter()
            .map(|(start, attributes, h)| HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                count: h.count(),
                sum: Some(h.sum()),
                bucket_counts: h.bucket_counts().to_vec(),
                explicit_bounds: h.bounds().to_vec(),
                min: h.min(),
                max: h.max(),
                ..Default::default()
            })
            .collect();
        self.push(
            name,
            unit,
            description,
            metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        );
    }
}

/// Start of a model version's cumulative series: when its state was created (process start if
/// it has none).
pub(super) fn model_since(snapshot: &SidecarSnapshot, key: &ModelKey, start: u64) -> u64 {
    snapshot
        .models
        .get(key)
        .map_or(start, |ops| unix_nanos(ops.since))
}

pub(super) fn model_attributes(key: &ModelKey) -> Vec<KeyValue> {
    vec![
        resource::attribute("inferscope.model.name", &key.model),
        resource::attribute("inferscope.model.version", &key.version),
    ]
}

pub(super) fn with(mut attributes: Vec<KeyValue>, key: &str, value: &str) -> Vec<KeyValue> {
    attributes.push(resource::attribute(key, value));
    attributes
}

/// Gauges of several names collected in one pass over the models, then pushed one metric per
/// name (in first-seen order).
#[derive(Default)]
pub(super) struct Gauges {
    points: Vec<(&'static str, &'static str, &'static str, Point<Option<f64>>)>,
}

impl Gauges {
    pub(super) fn add(
        &mut self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        point: Point<Option<f64>>,
    ) {
        self.points.push((name, unit, description, point));
    }

    pub(super) fn flush(self, b: &mut MetricsBuilder) {
        // Group by name, keeping first-seen order.
        let mut order: Vec<(&str, &str, &str)> = Vec::new();
        for (name, unit, description, _) in &self.points {
            if !order.iter().any(|(n, _, _)| n == name) {
                order.push((name, unit, description));
            }
        }
        let mut points = self.points;
        for (name, unit, description) in order {
            let (mine, rest): (Vec<_>, Vec<_>) = points.into_iter().partition(|p| p.0 == name);
            points = rest;
            b.gauge_double(
                name,
                unit,
                description,
                mine.into_iter().map(|p| p.3).collect(),
            );
        }
    }
}
