//! KServe payloads to record parts: features from a request body, predictions from a response
//! body, one entry per batch row. Pure functions over `serde_json::Value`, no I/O.
//!
//! The bodies are the model server's own JSON, logged unchanged by KServe's InferenceLogger
//! (`docs/no-code-capture-sources.md` F.3):
//! - V1: `{"instances": [...]}` → `{"predictions": [...]}`, one element per row;
//! - V2 / Open Inference Protocol: `{"id"?, "inputs": [{"name", "shape", "datatype", "data"}]}`
//!   → `{"model_name", "id", "outputs": [{"name", "shape", "datatype", "data"}]}`; `data` is
//!   row-major, flat or nested; the first dimension of `shape` is the batch.
//!
//! What the bodies do not say (which output holds the probabilities, which inputs are
//! categorical, the task and the class names) comes from a [`ModelMapping`] in the config file
//! or from the model's declaration sent over gRPC (README: "KServe's payload logger").

use crate::{models::Declaration, pb};
use serde::Deserialize;
use serde_json::Value;

/// The model's task, as a mapping names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappedTask {
    Binary,
    Multiclass,
    Regression,
}

impl MappedTask {
    fn of(task: pb::TaskType) -> Option<Self> {
        match task {
            pb::TaskType::BinaryClassification => Some(Self::Binary),
            pb::TaskType::MulticlassClassification => Some(Self::Multiclass),
            pb::TaskType::Regression => Some(Self::Regression),
            _ => None,
        }
    }

    fn to_pb(self) -> pb::TaskType {
        match self {
            Self::Binary => pb::TaskType::BinaryClassification,
            Self::Multiclass => pb::TaskType::MulticlassClassification,
            Self::Regression => pb::TaskType::Regression,
        }
    }
}

/// What KServe's `spec.predictor.logger.mode` sends, so that a half without its partner is
/// not waited for in vain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoggerMode {
    /// Request and response events (KServe's default); joined by `ce-id`.
    #[default]
    All,
    /// Request events only: each becomes records with features and no prediction, at once.
    Request,
    /// Response events only: each becomes records with a prediction and no features, at once.
    Response,
}

/// `[capture.kserve.models.<name>]` of the config file: how one InferenceService's payloads
/// map onto records.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelMapping {
    /// The records' model version [default: "1"]: KServe's events carry none.
    pub version: Option<String>,
    /// `binary`, `multiclass` or `regression`; with `class_names`, it is declared for the
    /// model as a gRPC `ModelDeclaration` would be, unless one was sent over gRPC.
    pub task: Option<MappedTask>,
    pub class_names: Vec<String>,
    /// Binary: the class whose probability is the score [default: the second class].
    pub positive_class: Option<String>,
    /// The V2 output holding class probabilities, shape [rows, classes].
    pub probabilities_output: Option<String>,
    /// The V2 output holding the predicted class (index or name) or the regression value.
    pub prediction_output: Option<String>,
    /// Inputs (V2 input names, V1 object keys or `instances_<j>`) whose values are categories.
    pub categorical_inputs: Vec<String>,
    /// What the InferenceService's logger sends [default: all].
    pub logger_mode: LoggerMode,
    /// A request header whose value names the request's records (`<value>/<row>`), read from
    /// KServe's `metadata` extension: list it in the logger's `metadataHeaders` too
    /// (e.g. `X-Request-Id`). Without it, or when a request lacks it: the V2 `id`, else `ce-id`.
    pub request_id_header: Option<String>,
}

impl ModelMapping {
    /// The declaration this mapping makes for `model`/`version`, if it says enough to make one
    /// (a task or class names).
    pub fn declaration(&self, model: &str, version: &str) -> Option<pb::ModelDeclaration> {
        if self.task.is_none() && self.class_names.is_empty() {
            return None;
        }
        Some(pb::ModelDeclaration {
            model: model.to_owned(),
            version: version.to_owned(),
            task: self
                .task
                .map_or(pb::TaskType::Unspecified, MappedTask::to_pb) as i32,
            class_names: self.class_names.clone(),
            positive_class: self.positive_class.clone().unwrap_or_default(),
            ..Default::default()
        })
    }
}

/// What a body could not be mapped for; the HTTP answer says it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Shape(String),
}

fn shape_error(message: impl Into<String>) -> MapError {
    MapError::Shape(message.into())
}

/// The schema a payload is read with: the mapping's, completed by the declaration.
pub struct Schema<'a> {
    pub mapping: &'a ModelMapping,
    pub declaration: Option<&'a Declaration>,
}

impl Schema<'_> {
    fn task(&self) -> Option<MappedTask> {
        self.mapping
            .task
            .or_else(|| self.declaration.and_then(|d| MappedTask::of(d.task)))
    }

    fn class_names(&self) -> &[String] {
        match self.declaration {
            Some(d) if !d.class_names.is_empty() => &d.class_names,
            _ => &self.mapping.class_names,
        }
    }

    fn positive_index(&self) -> usize {
        let positive = self
            .declaration
            .and_then(|d| d.positive_class.as_deref())
            .or(self.mapping.positive_class.as_deref());
        positive
            .and_then(|p| self.class_names().iter().position(|c| c == p))
            .unwrap_or(1)
    }

    fn categorical(&self, input: &str, feature: &str) -> bool {
        let listed = |name: &str| self.mapping.categorical_inputs.iter().any(|c| c == name);
        listed(input)
            || listed(feature)
            || self
                .declaration
                .is_some_and(|d| d.categorical_features.iter().any(|c| c == feature))
    }
}

/// A request body's rows, and the request's own id (V2 `id`), if it has one.
#[derive(Debug, Default, PartialEq)]
pub struct RequestRows {
    pub id: Option<String>,
    pub rows: Vec<Vec<pb::NamedFeature>>,
}

/// A response body's rows: each row's prediction; and the request's id the V2 response echoes.
#[derive(Debug, Default, PartialEq)]
pub struct ResponseRows {
    pub id: Option<String>,
    pub rows: Vec<Option<pb::inference_record::Prediction>>,
}

pub fn parse(body: &[u8]) -> Result<Value, MapError> {
    serde_json::from_slice(body).map_err(|e| MapError::Json(e.to_string()))
}

/// One V2 tensor, flattened.
struct Tensor<'a> {
    name: &'a str,
    datatype: &'a str,
    rows: usize,
    /// Values per row.
    width: usize,
    data: Vec<&'a Value>,
}

impl<'a> Tensor<'a> {
    fn read(value: &'a Value, what: &str) -> Result<Self, MapError> {
        let name = value["name"]
            .as_str()
            .ok_or_else(|| shape_error(format!("an {what} without a name")))?;
        let shape: Vec<usize> = value["shape"]
            .as_array()
            .ok_or_else(|| shape_error(format!("{what} {name:?} has no shape")))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                shape_error(format!("{what} {name:?}: the shape is not whole numbers"))
            })?;
        let mut data = Vec::new();
        flatten(&value["data"], &mut data);
        let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(shape_error(format!(
                "{what} {name:?}: shape {shape:?} holds {} values, data has {}",
                expected.map_or("too many".to_owned(), |n| n.to_string()),
                data.len()
            )));
        }
        let rows = shape.first().copied().unwrap_or(1);
        let width = data.len().checked_div(rows).unwrap_or(0);
        Ok(Self {
            name,
            datatype: value["datatype"].as_str().unwrap_or(""),
            rows,
            width,
            data,
        })
    }

    fn row(&self, row: usize) -> &[&'a Value] {
        &self.data[row * self.width..(row + 1) * self.width]
    }

    fn is_bytes(&self) -> bool {
        self.datatype == "BYTES"
    }

    fn is_float(&self) -> bool {
        self.datatype.starts_with("FP")
    }
}

/// `value`'s scalars in row-major order (V2 allows nested arrays as well as flat data).
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        Value::Null => {}
        scalar => out.push(scalar),
    }
}

fn feature(name: String, value: &Value, categorical: bool) -> pb::NamedFeature {
    use pb::named_feature::Value as V;
    let value = match value {
        Value::String(s) if categorical || s.parse::<f64>().is_err() => V::Category(s.clone()),
        Value::String(s) => V::Number(s.parse().unwrap_or(f64::NAN)),
        Value::Bool(b) if categorical => V::Category(b.to_string()),
        Value::Bool(b) => V::Number(f64::from(u8::from(*b))),
        Value::Number(n) if categorical => V::Category(n.to_string()),
        Value::Number(n) => V::Number(n.as_f64().unwrap_or(f64::NAN)),
        // A null (or anything else) is a missing value.
        _ if categorical => V::Category(String::new()),
        _ => V::Number(f64::NAN),
    };
    pb::NamedFeature {
        name,
        value: Some(value),
    }
}

/// The rows of a request body: V2 `inputs` or V1 `instances`.
pub fn request_rows(body: &Value, schema: &Schema) -> Result<RequestRows, MapError> {
    if let Some(inputs) = body.get("inputs").and_then(Value::as_array) {
        let id = body.get("id").and_then(Value::as_str).map(str::to_owned);
        return Ok(RequestRows {
            id: id.filter(|id| !id.is_empty()),
            rows: v2_inputs(inputs, schema)?,
        });
    }
    if let Some(instances) = body.get("instances").and_then(Value::as_array) {
        return Ok(RequestRows {
            id: None,
            rows: v1_instances(instances, schema)?,
        });
    }
    Err(shape_error(
        "a request body needs V2 \"inputs\" or V1 \"instances\" (an array)",
    ))
}

fn v2_inputs(inputs: &[Value], schema: &Schema) -> Result<Vec<Vec<pb::NamedFeature>>, MapError> {
    let tensors = inputs
        .iter()
        .map(|i| Tensor::read(i, "input"))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(rows) = tensors.first().map(|t| t.rows) else {
        return Ok(Vec::new());
    };
    if let Some(t) = tensors.iter().find(|t| t.rows != rows) {
        return Err(shape_error(format!(
            "inputs disagree on the batch size: {:?} has {} rows, {:?} has {rows}",
            t.name, t.rows, tensors[0].name
        )));
    }
    // One input of several columns: named by the declared feature order when it fits.
    let declared = schema
        .declaration
        .filter(|d| tensors.len() == 1 && d.numeric_features.len() == tensors[0].width)
        .map(|d| &d.numeric_features);
    let names: Vec<Vec<String>> = tensors
        .iter()
        .map(|t| match (t.width, declared) {
            (1, _) => vec![t.name.to_owned()],
            (_, Some(names)) => names.clone(),
            (n, None) => (0..n).map(|j| format!("{}_{j}", t.name)).collect(),
        })
        .collect();
    Ok((0..rows)
        .map(|row| {
            tensors
                .iter()
                .zip(&names)
                .flat_map(|(t, names)| {
                    t.row(row).iter().zip(names).map(|(value, name)| {
                        let categorical = t.is_bytes() || schema.categorical(t.name, name);
                        feature(name.clone(), value, categorical)
                    })
                })
                .collect()
        })
        .collect())
}

fn v1_instances(
    instances: &[Value],
    schema: &Schema,
) -> Result<Vec<Vec<pb::NamedFeature>>, MapError> {
    instances
        .iter()
        .map(|instance| match instance {
            Value::Object(fields) => Ok(fields
                .iter()
                .map(|(name, value)| feature(name.clone(), value, schema.categorical(name, name)))
                .collect()),
            Value::Array(values) => {
                let declared = schema
                    .declaration
                    .filter(|d| d.numeric_features.len() == values.len());
                Ok(values
                    .iter()
                    .enumerate()
                    .map(|(j, value)| {
                        let name = match declared {
                            Some(d) => d.numeric_features[j].clone(),
                            None => format!("instances_{j}"),
                        };
                        let categorical = schema.categorical("instances", &name);
                        feature(name, value, categorical)
                    })
                    .collect())
            }
            Value::Null => Err(shape_error("a null instance")),
            scalar => Ok(vec![feature(
                "instances".to_owned(),
                scalar,
                schema.categorical("instances", "instances"),
            )]),
        })
        .collect()
}

/// The rows of a response body: V2 `outputs` or V1 `predictions`.
pub fn response_rows(body: &Value, schema: &Schema) -> Result<ResponseRows, MapError> {
    if let Some(outputs) = body.get("outputs").and_then(Value::as_array) {
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        return Ok(ResponseRows {
            id: id.map(str::to_owned),
            ..v2_outputs(outputs, schema)?
        });
    }
    if let Some(predictions) = body.get("predictions").and_then(Value::as_array) {
        return Ok(ResponseRows {
            id: None,
            rows: predictions
                .iter()
                .map(|p| v1_prediction(p, schema))
                .collect::<Result<_, _>>()?,
        });
    }
    Err(shape_error(
        "a response body needs V2 \"outputs\" or V1 \"predictions\" (an array)",
    ))
}

use pb::inference_record::Prediction;

fn classification(c: pb::Classification) -> Prediction {
    Prediction::Classification(c)
}

/// A predicted class given as a number: an index into the class names when there are any,
/// else the number as the class's name.
fn class_from_number(n: &serde_json::Number, schema: &Schema) -> Result<Prediction, MapError> {
    let Some(index) = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
            .map(|f| f as u64)
    }) else {
        return Err(shape_error(format!(
            "the predicted class {n} is not a class index"
        )));
    };
    let mut c = pb::Classification::default();
    if schema.class_names().is_empty() {
        c.predicted_class = index.to_string();
    } else {
        c.predicted_class_index = Some(index.min(u32::MAX as u64) as u32);
    }
    Ok(classification(c))
}

/// Probabilities in class order: a binary classifier's become its score.
fn probabilities(values: Vec<f64>, schema: &Schema) -> pb::Classification {
    let mut c = pb::Classification::default();
    if schema.task() == Some(MappedTask::Binary) && values.len() == 2 {
        c.score = Some(values[schema.positive_index()]);
    } else {
        c.class_probabilities = values;
    }
    c
}

fn numbers(values: &[&Value]) -> Result<Vec<f64>, MapError> {
    values
        .iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| shape_error(format!("{v} is not a probability")))
        })
        .collect()
}

fn v1_prediction(p: &Value, schema: &Schema) -> Result<Option<Prediction>, MapError> {
    let task = schema.task();
    Ok(Some(match p {
        Value::Number(n) if task == Some(MappedTask::Regression) => {
            Prediction::Regression(pb::Regression {
                value: n.as_f64().unwrap_or(f64::NAN),
            })
        }
        Value::Number(n) if task.is_some() || n.is_u64() || n.is_i64() => {
            class_from_number(n, schema)?
        }
        Value::Number(n) => Prediction::Regression(pb::Regression {
            value: n.as_f64().unwrap_or(f64::NAN),
        }),
        Value::String(s) => classification(pb::Classification {
            predicted_class: s.clone(),
            ..Default::default()
        }),
        Value::Array(values) => {
            let values: Vec<&Value> = values.iter().collect();
            classification(probabilities(numbers(&values)?, schema))
        }
        Value::Null => return Ok(None),
        other => {
            return Err(shape_error(format!(
                "a V1 prediction must be a number, a class name or probabilities, not {other}"
            )))
        }
    }))
}

fn v2_outputs(outputs: &[Value], schema: &Schema) -> Result<ResponseRows, MapError> {
    let tensors = outputs
        .iter()
        .map(|o| Tensor::read(o, "output"))
        .collect::<Result<Vec<_>, _>>()?;
    let named = |setting: &Option<String>, what: &str| -> Result<Option<&Tensor>, MapError> {
        match setting {
            None => Ok(None),
            Some(name) => tensors
                .iter()
                .find(|t| t.name == name)
                .map(Some)
                .ok_or_else(|| {
                    shape_error(format!("the response has no output {name:?} ({what})"))
                }),
        }
    };
    let regression = schema.task() == Some(MappedTask::Regression);
    let probabilities_tensor =
        match named(&schema.mapping.probabilities_output, "probabilities_output")? {
            Some(t) => Some(t),
            // Unnamed: a floating-point output of two or more columns, unless the task is
            // regression.
            None if !regression => tensors.iter().find(|t| t.is_float() && t.width >= 2),
            None => None,
        };
    let prediction_tensor = match named(&schema.mapping.prediction_output, "prediction_output")? {
        Some(t) => Some(t),
        None => tensors
            .iter()
            .find(|t| t.width == 1 && !probabilities_tensor.is_some_and(|p| std::ptr::eq(p, *t))),
    };
    let rows = prediction_tensor
        .or(probabilities_tensor)
        .map_or(0, |t| t.rows);
    if let (Some(a), Some(b)) = (prediction_tensor, probabilities_tensor) {
        if a.rows != b.rows {
            return Err(shape_error(format!(
                "outputs disagree on the batch size: {:?} has {} rows, {:?} has {}",
                a.name, a.rows, b.name, b.rows
            )));
        }
    }
    if let Some(t) = prediction_tensor.filter(|t| t.width != 1) {
        return Err(shape_error(format!(
            "output {:?} has {} values a row; a prediction is one",
            t.name, t.width
        )));
    }
    (0..rows)
        .map(|row| {
            let mut c = match probabilities_tensor {
                Some(t) => probabilities(numbers(t.row(row))?, schema),
                None => pb::Classification::default(),
            };
            let Some(t) = prediction_tensor else {
                return Ok(probabilities_tensor.map(|_| classification(c)));
            };
            let value = t.row(row)[0];
            let prediction = match value {
                Value::Number(n)
                    if regression
                        || (schema.task().is_none()
                            && t.is_float()
                            && probabilities_tensor.is_none()) =>
                {
                    Prediction::Regression(pb::Regression {
                        value: n.as_f64().unwrap_or(f64::NAN),
                    })
                }
                Value::Number(n) => match class_from_number(n, schema)? {
                    Prediction::Classification(p) => {
                        c.predicted_class = p.predicted_class;
                        c.predicted_class_index = p.predicted_class_index;
                        classification(c)
                    }
                    other => other,
                },
                Value::String(s) => {
                    c.predicted_class = s.clone();
                    classification(c)
                }
                other => {
                    return Err(shape_error(format!(
                        "output {:?}: {other} is not a prediction",
                        t.name
                    )))
                }
            };
            Ok(Some(prediction))
        })
        .collect::<Result<_, _>>()
        .map(|rows| ResponseRows { id: None, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(mapping: &ModelMapping) -> Schema<'_> {
        Schema {
            mapping,
            declaration: None,
        }
    }

    fn number(name: &str, v: f64) -> pb::NamedFeature {
        pb::NamedFeature {
            name: name.into(),
            value: Some(pb::named_feature::Value::Number(v)),
        }
    }

    fn category(name: &str, v: &str) -> pb::NamedFeature {
        pb::NamedFeature {
            name: name.into(),
            value: Some(pb::named_feature::Value::Category(v.into())),
        }
    }

    #[test]
    fn one_v2_input_of_several_columns_is_one_feature_per_column() {
        let body = json!({"id": "r1", "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]});
        let rows = request_rows(&body, &schema(&ModelMapping::default())).unwrap();
        assert_eq!(rows.id.as_deref(), Some("r1"));
        assert_eq!(
            rows.rows[1],
            vec![number("x_0", 4.0), number("x_1", 5.0), number("x_2", 6.0)]
        );
    }

    #[test]
    fn several_v2_inputs_are_one_feature_each_and_bytes_are_categories() {
        let body = json!({"inputs": [
            {"name": "age", "shape": [2], "datatype": "INT64", "data": [30, 40]},
            {"name": "city", "shape": [2, 1], "datatype": "BYTES", "data": [["paris"], ["oslo"]]},
            {"name": "tier", "shape": [2], "datatype": "INT32", "data": [1, 2]}]});
        let mapping = ModelMapping {
            categorical_inputs: vec!["tier".into()],
            ..Default::default()
        };
        let rows = request_rows(&body, &schema(&mapping)).unwrap();
        assert_eq!(
            rows.rows[1],
            vec![
                number("age", 40.0),
                category("city", "oslo"),
                category("tier", "2")
            ]
        );
    }

    #[test]
    fn shapes_that_disagree_are_refused() {
        let wrong_count = json!({"inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]});
        let wrong_rows = json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "b", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]});
        let mapping = ModelMapping::default();
        for body in [wrong_count, wrong_rows] {
            assert!(matches!(
                request_rows(&body, &schema(&mapping)),
                Err(MapError::Shape(_))
            ));
        }
    }

    #[test]
    fn v1_instances_as_arrays_and_objects() {
        let mapping = ModelMapping::default();
        let arrays = json!({"instances": [[6.8, 2.8], [6.1, 3.0]]});
        let rows = request_rows(&arrays, &schema(&mapping)).unwrap();
        assert_eq!(
            rows.rows[0],
            vec![number("instances_0", 6.8), number("instances_1", 2.8)]
        );
        let objects = json!({"instances": [{"sepal": 5.1, "color": "red"}]});
        let rows = request_rows(&objects, &schema(&mapping)).unwrap();
        assert_eq!(
            rows.rows[0],
            vec![category("color", "red"), number("sepal", 5.1)]
        );
    }

    #[test]
    fn v2_probabilities_and_class_index() {
        let mapping = ModelMapping {
            task: Some(MappedTask::Multiclass),
            class_names: vec!["a".into(), "b".into(), "c".into()],
            probabilities_output: Some("proba".into()),
            prediction_output: Some("label".into()),
            ..Default::default()
        };
        let body = json!({"outputs": [
            {"name": "label", "shape": [1], "datatype": "INT64", "data": [2]},
            {"name": "proba", "shape": [1, 3], "datatype": "FP64", "data": [[0.1, 0.2, 0.7]]}]});
        let rows = response_rows(&body, &schema(&mapping)).unwrap();
        assert_eq!(
            rows.rows,
            vec![Some(classification(pb::Classification {
                predicted_class_index: Some(2),
                class_probabilities: vec![0.1, 0.2, 0.7],
                ..Default::default()
            }))]
        );
    }

    #[test]
    fn a_binary_classifiers_probabilities_become_its_score() {
        let mapping = ModelMapping {
            task: Some(MappedTask::Binary),
            class_names: vec!["neg".into(), "pos".into()],
            ..Default::default()
        };
        let body = json!({"outputs": [
            {"name": "p", "shape": [2, 2], "datatype": "FP64", "data": [0.75, 0.25, 0.1, 0.9]}]});
        let rows = response_rows(&body, &schema(&mapping)).unwrap();
        let scores: Vec<_> = rows
            .rows
            .iter()
            .map(|p| match p {
                Some(Prediction::Classification(c)) => c.score,
                _ => None,
            })
            .collect();
        assert_eq!(scores, [Some(0.25), Some(0.9)]);
    }

    #[test]
    fn v1_predictions_without_a_schema_read_as_their_json_type_says() {
        let body = json!({"predictions": [1, 2.5, "cat", [0.2, 0.8]]});
        let rows = response_rows(&body, &schema(&ModelMapping::default())).unwrap();
        assert_eq!(
            rows.rows,
            vec![
                Some(classification(pb::Classification {
                    predicted_class: "1".into(),
                    ..Default::default()
                })),
                Some(Prediction::Regression(pb::Regression { value: 2.5 })),
                Some(classification(pb::Classification {
                    predicted_class: "cat".into(),
                    ..Default::default()
                })),
                Some(classification(pb::Classification {
                    class_probabilities: vec![0.2, 0.8],
                    ..Default::default()
                })),
            ]
        );
    }

    #[test]
    fn a_regression_mapping_reads_integers_as_values() {
        let mapping = ModelMapping {
            task: Some(MappedTask::Regression),
            ..Default::default()
        };
        let body = json!({"outputs": [
            {"name": "y", "shape": [2], "datatype": "INT64", "data": [3, 4]}]});
        let rows = response_rows(&body, &schema(&mapping)).unwrap();
        assert_eq!(
            rows.rows[1],
            Some(Prediction::Regression(pb::Regression { value: 4.0 }))
        );
    }
}
