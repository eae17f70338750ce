//! Checks every record (and label, and declaration) before it reaches a shard, so that shards can
//! trust what they get. A bad record is rejected alone, with the field and the reason; the rest
//! of its batch goes on.
//!
//! What is *not* a rejection: NaN or infinite feature values (a missing or broken feature is the
//! model server's data, later flagged as a data-quality anomaly, never a reason to lose the record).
//!
//! Values that are summed into exported metrics (latencies, token counts) must also lie in a
//! documented range: one absurd but finite value (1.7e308 s) would otherwise turn a cumulative
//! sum into +Inf for the life of the process.

use crate::{models::Declaration, pb, tracecontext::TraceParent};
use pb::RejectReason;

/// Records one batch may carry; larger batches are refused whole with INVALID_ARGUMENT.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 10_000;

/// Largest accepted `latency_seconds` and `generation.time_to_first_token_seconds`: one day.
/// No single inference request runs that long (a batch job reports per request), the latency
/// histograms end at 60 s and 81.92 s anyway, and a day keeps the cumulative sums finite and
/// meaningful: even 2^64 records at the limit sum to 1.6e24 s, far from overflowing an f64.
pub const MAX_LATENCY_SECONDS: f64 = 86_400.0;

/// Largest accepted `generation.input_tokens` and `generation.output_tokens`: 2^31. Two hundred
/// times the longest context windows offered today (about 10 million tokens), so no real request
/// comes near it, while a wrapped-around or uninitialised counter (a value near 2^64) does not
/// reach the token sums. The token histograms' last bound is 2^26.
pub const MAX_TOKENS: u64 = 1 << 31;

/// Bounds on what one record may carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_batch_records: usize,
    /// Model, version, request id, feature names, categorical values, class names.
    pub max_name_len: usize,
    /// `error_type`, `finish_reason`, `operation`: values that become metric attributes.
    pub max_attribute_value_len: usize,
    pub max_features: usize,
    pub max_classes: usize,
    pub max_attributes: usize,
    pub max_tracestate_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            max_name_len: 256,
            max_attribute_value_len: 64,
            max_features: 4096,
            max_classes: 1024,
            max_attributes: 16,
            max_tracestate_len: 512,
        }
    }
}

/// Why one record (or label) is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field as the proto names it, e.g. `latency_seconds`, `classification.score`.
    pub field: &'static str,
    pub reason: RejectReason,
    pub message: String,
}

fn reject(field: &'static str, reason: RejectReason, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason,
        message: message.into(),
    }
}

/// The reject of an item of `field` (`records`, `labels`) whose bytes did not decode
/// (`crate::wire`'s `malformed`).
pub fn malformed(field: &'static str, error: &str) -> FieldError {
    reject(
        field,
        RejectReason::Malformed,
        format!("not valid protobuf ({error}); the rest of the batch is processed"),
    )
}

/// A batch-level problem: the whole batch is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("batch has {records} records, more than the limit of {limit} (--max-batch-records); split it")]
    TooLarge { records: usize, limit: usize },
    #[error("declarations[{index}].{}", .error)]
    Declaration { index: usize, error: FieldError },
}

/// The model version a record belongs to: its own, or the batch's.
pub fn model_of<'a>(
    record_model: &'a str,
    record_version: &'a str,
    batch_model: &'a str,
    batch_version: &'a str,
) -> (&'a str, &'a str) {
    if record_model.is_empty() {
        (batch_model, batch_version)
    } else {
        (record_model, record_version)
    }
}

fn check_name(field: &'static str, value: &str, limits: &Limits) -> Result<(), FieldError> {
    if value.len() > limits.max_name_len {
        return Err(reject(
            field,
            RejectReason::TooLong,
            format!("{} bytes, limit {}", value.len(), limits.max_name_len),
        ));
    }
    Ok(())
}

/// Validates a model name and version.
pub fn check_model(model: &str, version: &str, limits: &Limits) -> Result<(), FieldError> {
    if model.is_empty() {
        return Err(reject(
            "model",
            RejectReason::MissingField,
            "neither the record nor its batch names a model",
        ));
    }
    check_name("model", model, limits)?;
    check_name("version", version, limits)
}

fn check_attribute_value(
    field: &'static str,
    value: &str,
    limits: &Limits,
) -> Result<(), FieldError> {
    if value.len() > limits.max_attribute_value_len {
        return Err(reject(
            field,
            RejectReason::TooLong,
            format!(
                "{} bytes, limit {}",
                value.len(),
                limits.max_attribute_value_len
            ),
        ));
    }
    Ok(())
}

fn check_finite(field: &'static str, value: f64) -> Result<(), FieldError> {
    if !value.is_finite() {
        return Err(reject(
            field,
            RejectReason::InvalidValue,
            format!("{value} is not a finite number"),
        ));
    }
    Ok(())
}

/// A duration in seconds: finite, >= 0 and at most [`MAX_LATENCY_SECONDS`].
fn check_seconds(field: &'static str, value: f64) -> Result<(), FieldError> {
    check_finite(field, value)?;
    if value < 0.0 {
        return Err(reject(
            field,
            RejectReason::InvalidValue,
            format!("{value} is negative"),
        ));
    }
    if value > MAX_LATENCY_SECONDS {
        return Err(reject(
            field,
            RejectReason::InvalidValue,
            format!("{value} s is more than the limit of {MAX_LATENCY_SECONDS} s (one day)"),
        ));
    }
    Ok(())
}

/// A token count: at most [`MAX_TOKENS`].
fn check_tokens(field: &'static str, value: u64) -> Result<(), FieldError> {
    if value > MAX_TOKENS {
        return Err(reject(
            field,
            RejectReason::InvalidValue,
            format!("{value} tokens, more than the limit of {MAX_TOKENS} (2^31)"),
        ));
    }
    Ok(())
}

/// A probability: in [0, 1] (NaN is not).
fn check_probability(field: &'static str, p: f64) -> Result<(), FieldError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(reject(
            field,
            RejectReason::InvalidValue,
            format!("{p} is not a probability in [0, 1]"),
        ));
    }
    Ok(())
}

/// A class name given by name: rejected when the declaration lists its classes, does not allow
/// others, and lacks this one ([`Declaration::rejects_class`]).
fn check_declared_class(
    field: &'static str,
    name: &str,
    declaration: Option<&Declaration>,
) -> Result<(), FieldError> {
    match declaration {
        Some(d) if d.rejects_class(name) => Err(reject(
            field,
            RejectReason::UndeclaredClass,
            format!(
                "class {name:?} is not one of the model's declared class_names {:?} \
                 (declare it, or set allow_undeclared_classes in the declaration)",
                d.class_names
            ),
        )),
        _ => Ok(()),
    }
}

fn check_class_index(
    field: &'static str,
    index: u32,
    declaration: Option<&Declaration>,
) -> Result<(), FieldError> {
    match declaration {
        Some(d) if (index as usize) < d.class_names.len() => Ok(()),
        Some(d) => Err(reject(
            field,
            RejectReason::UnknownClass,
            format!(
                "class index {index}, but the model declares {} classes",
                d.class_names.len()
            ),
        )),
        None => Err(reject(
            field,
            RejectReason::UnknownClass,
            "a class index needs a model declaration with class_names",
        )),
    }
}

fn check_label(
    label: &pb::Label,
    declaration: Option<&Declaration>,
    limits: &Limits,
) -> Result<(), FieldError> {
    match &label.value {
        None => Err(reject(
            "label",
            RejectReason::MissingField,
            "label has no value",
        )),
        Some(pb::label::Value::ClassName(name)) => {
            if name.is_empty() {
                return Err(reject(
                    "label.class_name",
                    RejectReason::MissingField,
                    "empty class name",
                ));
            }
            check_name("label.class_name", name, limits)?;
            check_declared_class("label.class_name", name, declaration)
        }
        Some(pb::label::Value::ClassIndex(i)) => {
            check_class_index("label.class_index", *i, declaration)
        }
        Some(pb::label::Value::RegressionValue(v)) => check_finite("label.regression_value", *v),
        Some(pb::label::Value::Evaluation(e)) => {
            if e.name.is_empty() {
                return Err(reject(
                    "label.evaluation.name",
                    RejectReason::MissingField,
                    "an evaluation needs its name (gen_ai.evaluation.name)",
                ));
            }
            check_name("label.evaluation.name", &e.name, limits)?;
            check_name("label.evaluation.label", &e.label, limits)?;
            match e.score {
                Some(score) => check_finite("label.evaluation.score", score),
                None if e.label.is_empty() => Err(reject(
                    "label.evaluation",
                    RejectReason::MissingField,
                    "an evaluation needs a score or a label",
                )),
                None => Ok(()),
            }
        }
    }
}

/// Validates a W3C `traceparent` header value ([`TraceParent::parse`]).
pub fn check_traceparent(value: &str) -> Result<TraceParent, FieldError> {
    TraceParent::parse(value).map_err(|why| {
        reject(
            "traceparent",
            RejectReason::InvalidTraceparent,
            format!("{why}; expected 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"),
        )
    })
}

/// Validates one record against the limits and, when the model is declared, its schema.
pub fn check_record(
    record: &pb::InferenceRecord,
    model: &str,
    version: &str,
    declaration: Option<&Declaration>,
    limits: &Limits,
) -> Result<(), FieldError> {
    check_model(model, version, limits)?;
    check_name("request_id", &record.request_id, limits)?;
    if let Some(latency) = record.latency_seconds {
        check_seconds("latency_seconds", latency)?;
    }
    check_attribute_value("error_type", &record.error_type, limits)?;

    check_features(record, declaration, limits)?;

    use pb::inference_record::Prediction;
    match &record.prediction {
        None => {}
        Some(Prediction::Classification(c)) => check_classification(c, declaration, limits)?,
        Some(Prediction::Regression(r)) => check_finite("regression.value", r.value)?,
        Some(Prediction::Generation(g)) => {
            check_tokens("generation.input_tokens", g.input_tokens)?;
            check_tokens("generation.output_tokens", g.output_tokens)?;
            if let Some(ttft) = g.time_to_first_token_seconds {
                check_seconds("generation.time_to_first_token_seconds", ttft)?;
            }
            check_attribute_value("generation.finish_reason", &g.finish_reason, limits)?;
            check_attribute_value("generation.operation", &g.operation, limits)?;
            check_name("generation.response_model", &g.response_model, limits)?;
        }
    }
    if let Some(label) = &record.label {
        check_label(label, declaration, limits)?;
    }
    if !record.traceparent.is_empty() {
        check_traceparent(&record.traceparent)?;
    }
    if record.tracestate.len() > limits.max_tracestate_len {
        return Err(reject(
            "tracestate",
            RejectReason::TooLong,
            format!(
                "{} bytes, limit {}",
                record.tracestate.len(),
                limits.max_tracestate_len
            ),
        ));
    }
    if record.attributes.len() > limits.max_attributes {
        return Err(reject(
            "attributes",
            RejectReason::TooMany,
            format!(
                "{} attributes, limit {}",
                record.attributes.len(),
                limits.max_attributes
            ),
        ));
    }
    for attribute in &record.attributes {
        if attribute.key.is_empty() {
            return Err(reject(
                "attributes.key",
                RejectReason::MissingField,
                "empty attribute key",
            ));
        }
        check_name("attributes.key", &attribute.key, limits)?;
        check_name("attributes.value", &attribute.value, limits)?;
    }
    Ok(())
}

fn check_features(
    record: &pb::InferenceRecord,
    declaration: Option<&Declaration>,
    limits: &Limits,
) -> Result<(), FieldError> {
    let numeric = record.numeric_features.len();
    let categorical = record.categorical_features.len();
    let named = record.named_features.len();
    if numeric + categorical + named > limits.max_features {
        return Err(reject(
            "numeric_features",
            RejectReason::TooMany,
            format!(
                "{} features, limit {}",
                numeric + categorical + named,
                limits.max_features
            ),
        ));
    }
    if let Some(d) = declaration {
        // Positional values must match the declared schema; an empty sequence means the record
        // sends that kind by name or not at all.
        if numeric != 0 && numeric != d.numeric_features.len() {
            return Err(reject(
                "numeric_features",
                RejectReason::SchemaMismatch,
                format!(
                    "{numeric} values, but the model declares {} numeric features",
                    d.numeric_features.len()
                ),
            ));
        }
        if categorical != 0 && categorical != d.categorical_features.len() {
            return Err(reject(
                "categorical_features",
                RejectReason::SchemaMismatch,
                format!(
                    "{categorical} values, but the model declares {} categorical features",
                    d.categorical_features.len()
                ),
            ));
        }
    }
    for value in &record.categorical_features {
        check_name("categorical_features", value, limits)?;
    }
    for feature in &record.named_features {
        if feature.name.is_empty() {
            return Err(reject(
                "named_features.name",
                RejectReason::MissingField,
                "empty feature name",
            ));
        }
        check_name("named_features.name", &feature.name, limits)?;
        match &feature.value {
            None => {
                return Err(reject(
                    "named_features.value",
                    RejectReason::MissingField,
                    format!("feature {:?} has no value", feature.name),
                ))
            }
            Some(pb::named_feature::Value::Category(c)) => {
                check_name("named_features.category", c, limits)?
            }
            Some(pb::named_feature::Value::Number(_)) => {}
        }
    }
    Ok(())
}

fn check_classification(
    c: &pb::Classification,
    declaration: Option<&Declaration>,
    limits: &Limits,
) -> Result<(), FieldError> {
    check_name("classification.predicted_class", &c.predicted_class, limits)?;
    if !c.predicted_class.is_empty() {
        check_declared_class(
            "classification.predicted_class",
            &c.predicted_class,
            declaration,
        )?;
    }
    if let Some(i) = c.predicted_class_index {
        check_class_index("classification.predicted_class_index", i, declaration)?;
    }
    if let Some(score) = c.score {
        check_probability("classification.score", score)?;
    }
    if c.class_probabilities.len() > limits.max_classes {
        return Err(reject(
            "classification.class_probabilities",
            RejectReason::TooMany,
            format!(
                "{} probabilities, limit {}",
                c.class_probabilities.len(),
                limits.max_classes
            ),
        ));
    }
    for &p in &c.class_probabilities {
        check_probability("classification.class_probabilities", p)?;
    }
    if let Some(d) = declaration {
        let n = c.class_probabilities.len();
        if n != 0 && !d.class_names.is_empty() && n != d.class_names.len() {
            return Err(reject(
                "classification.class_probabilities",
                RejectReason::SchemaMismatch,
                format!(
                    "{n} probabilities, but the model declares {} classes",
                    d.class_names.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Validates a model declaration.
pub fn check_declaration(decl: &pb::ModelDeclaration, limits: &Limits) -> Result<(), FieldError> {
    check_model(&decl.model, &decl.version, limits)?;
    if decl.class_names.len() > limits.max_classes {
        return Err(reject(
            "class_names",
            RejectReason::TooMany,
            format!(
                "{} classes, limit {}",
                decl.class_names.len(),
                limits.max_classes
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for name in &decl.class_names {
        if name.is_empty() {
            return Err(reject(
                "class_names",
                RejectReason::MissingField,
                "empty class name",
            ));
        }
        check_name("class_names", name, limits)?;
        if !seen.insert(name.as_str()) {
            return Err(reject(
                "class_names",
                RejectReason::InvalidValue,
                format!("class {name:?} listed twice"),
            ));
        }
    }
    if !decl.positive_class.is_empty() && !seen.contains(decl.positive_class.as_str()) {
        return Err(reject(
            "positive_class",
            RejectReason::UnknownClass,
            format!("{:?} is not one of class_names", decl.positive_class),
        ));
    }
    check_task_classes(decl)?;
    if decl.features.len() > limits.max_features {
        return Err(reject(
            "features",
            RejectReason::TooMany,
            format!(
                "{} features, limit {}",
                decl.features.len(),
                limits.max_features
            ),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for feature in &decl.features {
        if feature.name.is_empty() {
            return Err(reject(
                "features.name",
                RejectReason::MissingField,
                "empty feature name",
            ));
        }
        check_name("features.name", &feature.name, limits)?;
        if !names.insert(feature.name.as_str()) {
            return Err(reject(
                "features.name",
                RejectReason::InvalidValue,
                format!("feature {:?} listed twice", feature.name),
            ));
        }
        if feature.kind() == pb::FeatureKind::Unspecified {
            return Err(reject(
                "features.kind",
                RejectReason::MissingField,
                format!(
                    "feature {:?} has no kind (NUMERIC or CATEGORICAL)",
                    feature.name
                ),
            ));
        }
    }
    check_attribute_value("gen_ai_provider", &decl.gen_ai_provider, limits)
}

/// The class list must fit the task (scikit-learn's `type_of_target` vocabulary):
/// - binary classification: exactly two class names (the negative and the positive class);
/// - multiclass: at least two. Two are allowed: a two-output softmax model is a multiclass model
///   with two classes, and its one-vs-rest metrics are then the binary ones of each class;
/// - regression and generation: none (a class would never be scored);
/// - unspecified: none, or at least two (the quality analysis then infers binary or multiclass
///   from the count); one class name is never a classifier.
///
/// `positive_class` only makes sense where the task is binary: binary classification, or an
/// unspecified task with two class names.
fn check_task_classes(decl: &pb::ModelDeclaration) -> Result<(), FieldError> {
    use pb::TaskType;
    let n = decl.class_names.len();
    let task = decl.task();
    let wrong_count = |needs: &str| {
        Err(reject(
            "class_names",
            RejectReason::InvalidValue,
            format!(
                "{n} class names for task {}; it needs {needs}",
                task.as_str_name()
            ),
        ))
    };
    match task {
        TaskType::BinaryClassification if n != 2 => return wrong_count("exactly two"),
        TaskType::MulticlassClassification if n < 2 => return wrong_count("at least two"),
        TaskType::Regression | TaskType::Generation if n != 0 => return wrong_count("none"),
        TaskType::Unspecified if n == 1 => return wrong_count("none, or at least two"),
        _ => {}
    }
    let binary =
        task == TaskType::BinaryClassification || (task == TaskType::Unspecified && n == 2);
    if !decl.positive_class.is_empty() && !binary {
        return Err(reject(
            "positive_class",
            RejectReason::InvalidValue,
            format!(
                "a positive class is only for binary classification, not task {}",
                task.as_str_name()
            ),
        ));
    }
    Ok(())
}

/// Validates one delayed label.
pub fn check_ground_truth(
    truth: &pb::GroundTruth,
    model: &str,
    version: &str,
    declaration: Option<&Declaration>,
    limits: &Limits,
) -> Result<(), FieldError> {
    check_model(model, version, limits)?;
    if truth.request_id.is_empty() {
        return Err(reject(
            "request_id",
            RejectReason::MissingField,
            "a delayed label needs the request id of its prediction",
        ));
    }
    check_name("request_id", &truth.request_id, limits)?;
    match &truth.label {
        None => Err(reject("label", RejectReason::MissingField, "no label")),
        Some(label) => check_label(label, declaration, limits),
    }
}

/// The snake_case name of a reject reason, used as the `reason` metric attribute.
pub fn reason_name(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Unspecified => "unspecified",
        RejectReason::MissingField => "missing_field",
        RejectReason::InvalidValue => "invalid_value",
        RejectReason::TooLong => "too_long",
        RejectReason::TooMany => "too_many",
        RejectReason::SchemaMismatch => "schema_mismatch",
        RejectReason::UnknownClass => "unknown_class",
        RejectReason::InvalidTraceparent => "invalid_traceparent",
        RejectReason::UndeclaredClass => "undeclared_class",
        RejectReason::Malformed => "malformed",
    }
}

/// Every reason, in enum order, for fixed-size counters indexed by `reason as usize`.
pub const REJECT_REASONS: [RejectReason; 10] = [
    RejectReason::Unspecified,
    RejectReason::MissingField,
    RejectReason::InvalidValue,
    RejectReason::TooLong,
    RejectReason::TooMany,
    RejectReason::SchemaMismatch,
    RejectReason::UnknownClass,
    RejectReason::InvalidTraceparent,
    RejectReason::UndeclaredClass,
    RejectReason::Malformed,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> pb::InferenceRecord {
        pb::InferenceRecord {
            request_id: "r1".into(),
            latency_seconds: Some(0.01),
            numeric_features: vec![1.0, 2.0],
            ..Default::default()
        }
    }

    fn declared() -> Declaration {
        Declaration {
            task: pb::TaskType::MulticlassClassification,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            positive_class: None,
            numeric_features: vec!["x".into(), "y".into()],
            categorical_features: vec!["country".into()],
            gen_ai_provider: None,
            allow_undeclared_classes: false,
        }
    }

    fn field_of(r: Result<(), FieldError>) -> (&'static str, RejectReason) {
        let e = r.expect_err("should be rejected");
        (e.field, e.reason)
    }

    #[test]
    fn a_plain_record_passes() {
        check_record(&record(), "m", "1", None, &Limits::default()).unwrap();
        check_record(&record(), "m", "1", Some(&declared()), &Limits::default()).unwrap();
    }

    #[test]
    fn nan_and_infinite_features_are_not_rejections() {
        let mut r = record();
        r.numeric_features = vec![f64::NAN, f64::INFINITY];
        check_record(&r, "m", "1", Some(&declared()), &Limits::default()).unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let limits = Limits::default();
        let d = declared();
        let long_name = "m".repeat(300);
        let cases: Vec<(pb::InferenceRecord, &str, &'static str, RejectReason)> = vec![
            (record(), "", "model", RejectReason::MissingField),
            (record(), &long_name, "model", RejectReason::TooLong),
            (
                pb::InferenceRecord {
                    latency_seconds: Some(f64::NAN),
                    ..record()
                },
                "m",
                "latency_seconds",
                RejectReason::InvalidValue,
            ),
            (
                pb::InferenceRecord {
                    latency_seconds: Some(f64::INFINITY),
                    ..record()
                },
                "m",
                "latency_seconds",
                RejectReason::InvalidValue,
            ),
            (
                pb::InferenceRecord {
                    latency_seconds: Some(-1.0),
                    ..record()
                },
                "m",
                "latency_seconds",
                RejectReason::InvalidValue,
            ),
            (
                pb::InferenceRecord {
                    numeric_features: vec![1.0; 3],
                    ..record()
                },
                "m",
                "numeric_features",
                RejectReason::SchemaMismatch,
            ),
            (
                pb::InferenceRecord {
                    categorical_features: vec!["a".into(), "b".into()],
                    ..record()
                },
                "m",
                "categorical_features",
                RejectReason::SchemaMismatch,
            ),
            (
                pb::InferenceRecord {
                    error_type: "e".repeat(65),
                    ..record()
                },
                "m",
                "error_type",
                RejectReason::TooLong,
            ),
            (
                pb::InferenceRecord {
                    traceparent: "00-abc".into(),
                    ..record()
                },
                "m",
                "traceparent",
                RejectReason::InvalidTraceparent,
            ),
            (
                pb::InferenceRecord {
                    prediction: Some(pb::inference_record::Prediction::Classification(
                        pb::Classification {
                            predicted_class_index: Some(3),
                            ..Default::default()
                        },
                    )),
                    ..record()
                },
                "m",
                "classification.predicted_class_index",
                RejectReason::UnknownClass,
            ),
            (
                pb::InferenceRecord {
                    prediction: Some(pb::inference_record::Prediction::Classification(
                        pb::Classification {
                            class_probabilities: vec![0.5, 1.5, 0.0],
                            ..Default::default()
                        },
                    )),
                    ..record()
                },
                "m",
                "classification.class_probabilities",
                RejectReason::InvalidValue,
            ),
            (
                pb::InferenceRecord {
                    prediction: Some(pb::inference_record::Prediction::Regression(
                        pb::Regression { value: f64::NAN },
                    )),
                    ..record()
                },
                "m",
                "regression.value",
                RejectReason::InvalidValue,
            ),
            (
                pb::InferenceRecord {
                    label: Some(pb::Label {
                        value: Some(pb::label::Value::ClassIndex(9)),
                    }),
                    ..record()
                },
                "m",
                "label.class_index",
                RejectReason::UnknownClass,
            ),
            (
                pb::InferenceRecord {
                    attributes: vec![pb::Attribute::default(); 17],
                    ..record()
                },
                "m",
                "attributes",
                RejectReason::TooMany,
            ),
        ];
        for (r, model, field, reason) in cases {
            assert_eq!(
                field_of(check_record(&r, model, "1", Some(&d), &limits)),
                (field, reason),
                "{r:?}"
            );
        }
    }

    fn classification(c: pb::Classification) -> pb::InferenceRecord {
        pb::InferenceRecord {
            prediction: Some(pb::inference_record::Prediction::Classification(c)),
            ..record()
        }
    }

    fn generation(g: pb::Generation) -> pb::InferenceRecord {
        pb::InferenceRecord {
            prediction: Some(pb::inference_record::Prediction::Generation(g)),
            ..record()
        }
    }

    #[test]
    fn absurd_but_finite_values_are_rejected() {
        let limits = Limits::default();
        let invalid = |r: &pb::InferenceRecord| {
            let (field, reason) = field_of(check_record(r, "m", "1", None, &limits));
            assert_eq!(reason, RejectReason::InvalidValue, "{field}");
            field
        };
        for latency in [1.7e308, MAX_LATENCY_SECONDS * 1.01] {
            let r = pb::InferenceRecord {
                latency_seconds: Some(latency),
                ..record()
            };
            assert_eq!(invalid(&r), "latency_seconds");
        }
        let ttft = generation(pb::Generation {
            time_to_first_token_seconds: Some(1e300),
            ..Default::default()
        });
        assert_eq!(invalid(&ttft), "generation.time_to_first_token_seconds");
        let input = generation(pb::Generation {
            input_tokens: MAX_TOKENS + 1,
            ..Default::default()
        });
        assert_eq!(invalid(&input), "generation.input_tokens");
        let output = generation(pb::Generation {
            output_tokens: u64::MAX,
            ..Default::default()
        });
        assert_eq!(invalid(&output), "generation.output_tokens");
        for score in [5.0, -3.0, 1.0 + 1e-9, f64::NAN] {
            let r = classification(pb::Classification {
                score: Some(score),
                ..Default::default()
            });
            assert_eq!(invalid(&r), "classification.score", "{score}");
        }

        // The limits themselves are accepted.
        let at_limits = [
            pb::InferenceRecord {
                latency_seconds: Some(MAX_LATENCY_SECONDS),
                ..record()
            },
            generation(pb::Generation {
                input_tokens: MAX_TOKENS,
                output_tokens: MAX_TOKENS,
                time_to_first_token_seconds: Some(MAX_LATENCY_SECONDS),
                ..Default::default()
            }),
            classification(pb::Classification {
                score: Some(0.0),
                ..Default::default()
            }),
            classification(pb::Classification {
                score: Some(1.0),
                ..Default::default()
            }),
        ];
        for r in &at_limits {
            check_record(r, "m", "1", None, &limits).unwrap();
        }
    }

    #[test]
    fn declarations_must_fit_their_task() {
        use pb::TaskType::*;
        let limits = Limits::default();
        let declare = |task: pb::TaskType, classes: &[&str], positive: &str| pb::ModelDeclaration {
            model: "m".into(),
            task: task as i32,
            class_names: classes.iter().map(|c| (*c).to_owned()).collect(),
            positive_class: positive.into(),
            ..Default::default()
        };
        for (task, classes, positive) in [
            (BinaryClassification, &["no", "yes"][..], "yes"),
            (BinaryClassification, &["no", "yes"], ""),
            (MulticlassClassification, &["a", "b", "c"], ""),
            (MulticlassClassification, &["a", "b"], ""),
            (Regression, &[], ""),
            (Generation, &[], ""),
            (Unspecified, &[], ""),
            (Unspecified, &["no", "yes"], "yes"),
            (Unspecified, &["a", "b", "c"], ""),
        ] {
            check_declaration(&declare(task, classes, positive), &limits)
                .unwrap_or_else(|e| panic!("{task:?} {classes:?} {positive:?}: {e}"));
        }
        for (task, classes, positive, field) in [
            (
                BinaryClassification,
                &["a", "b", "c"][..],
                "",
                "class_names",
            ),
            (BinaryClassification, &["yes"], "yes", "class_names"),
            (BinaryClassification, &[], "", "class_names"),
            (MulticlassClassification, &["a"], "", "class_names"),
            (MulticlassClassification, &[], "", "class_names"),
            (Regression, &["a", "b"], "", "class_names"),
            (Generation, &["a", "b"], "", "class_names"),
            (Unspecified, &["a"], "", "class_names"),
            (
                MulticlassClassification,
                &["a", "b", "c"],
                "a",
                "positive_class",
            ),
            (Unspecified, &["a", "b", "c"], "a", "positive_class"),
            (Regression, &[], "yes", "positive_class"),
        ] {
            let e = check_declaration(&declare(task, classes, positive), &limits)
                .expect_err(&format!("{task:?} {classes:?} {positive:?}"));
            assert_eq!(e.field, field, "{task:?} {classes:?}: {e}");
        }
    }

    #[test]
    fn undeclared_class_names_are_rejected_unless_allowed() {
        let limits = Limits::default();
        let strict = declared();
        let lenient = Declaration {
            allow_undeclared_classes: true,
            ..declared()
        };
        let predicted = |name: &str| {
            classification(pb::Classification {
                predicted_class: name.into(),
                ..Default::default()
            })
        };
        let labelled = |name: &str| pb::InferenceRecord {
            label: Some(pb::Label {
                value: Some(pb::label::Value::ClassName(name.into())),
            }),
            ..record()
        };
        let delayed = |name: &str| pb::GroundTruth {
            request_id: "r".into(),
            label: Some(pb::Label {
                value: Some(pb::label::Value::ClassName(name.into())),
            }),
            ..Default::default()
        };
        let undeclared = RejectReason::UndeclaredClass;
        assert_eq!(
            field_of(check_record(
                &predicted("d"),
                "m",
                "1",
                Some(&strict),
                &limits
            )),
            ("classification.predicted_class", undeclared)
        );
        assert_eq!(
            field_of(check_record(
                &labelled("A"),
                "m",
                "1",
                Some(&strict),
                &limits
            )),
            ("label.class_name", undeclared)
        );
        assert_eq!(
            field_of(check_ground_truth(
                &delayed("d"),
                "m",
                "1",
                Some(&strict),
                &limits
            )),
            ("label.class_name", undeclared)
        );
        // Declared names pass; so does anything for a model that allows it, declares no
        // classes, or is not declared.
        let no_classes = Declaration {
            class_names: Vec::new(),
            task: pb::TaskType::Unspecified,
            ..declared()
        };
        for d in [Some(&lenient), Some(&no_classes), None] {
            check_record(&predicted("d"), "m", "1", d, &limits).unwrap();
            check_record(&labelled("d"), "m", "1", d, &limits).unwrap();
            check_ground_truth(&delayed("d"), "m", "1", d, &limits).unwrap();
        }
        check_record(&predicted("c"), "m", "1", Some(&strict), &limits).unwrap();
        check_record(&labelled("a"), "m", "1", Some(&strict), &limits).unwrap();
        check_ground_truth(&delayed("b"), "m", "1", Some(&strict), &limits).unwrap();
    }

    #[test]
    fn traceparent_follows_w3c() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        check_traceparent(ok).unwrap();
        check_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").unwrap();
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "",
            "é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(check_traceparent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn declarations_are_checked() {
        let limits = Limits::default();
        let good = pb::ModelDeclaration {
            model: "m".into(),
            class_names: vec!["no".into(), "yes".into()],
            positive_class: "yes".into(),
            features: vec![pb::FeatureSpec {
                name: "x".into(),
                kind: pb::FeatureKind::Numeric as i32,
            }],
            ..Default::default()
        };
        check_declaration(&good, &limits).unwrap();
        let dup = pb::ModelDeclaration {
            class_names: vec!["a".into(), "a".into()],
            positive_class: String::new(),
            ..good.clone()
        };
        assert_eq!(field_of(check_declaration(&dup, &limits)).0, "class_names");
        let bad_positive = pb::ModelDeclaration {
            positive_class: "maybe".into(),
            ..good.clone()
        };
        assert_eq!(
            field_of(check_declaration(&bad_positive, &limits)).0,
            "positive_class"
        );
        let kindless = pb::ModelDeclaration {
            features: vec![pb::FeatureSpec {
                name: "x".into(),
                kind: 0,
            }],
            ..good
        };
        assert_eq!(
            field_of(check_declaration(&kindless, &limits)).0,
            "features.kind"
        );
    }

    #[test]
    fn delayed_labels_need_a_request_id_and_a_value() {
        let limits = Limits::default();
        let truth = pb::GroundTruth {
            request_id: "r".into(),
            label: Some(pb::Label {
                value: Some(pb::label::Value::RegressionValue(1.0)),
            }),
            ..Default::default()
        };
        check_ground_truth(&truth, "m", "", None, &limits).unwrap();
        let anonymous = pb::GroundTruth {
            request_id: String::new(),
            ..truth.clone()
        };
        assert_eq!(
            field_of(check_ground_truth(&anonymous, "m", "", None, &limits)).0,
            "request_id"
        );
        let empty = pb::GroundTruth {
            label: None,
            ..truth
        };
        assert_eq!(
            field_of(check_ground_truth(&empty, "m", "", None, &limits)).0,
            "label"
        );
    }
}
