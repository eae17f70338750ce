//! One `ModelInfer` call (request, and response or error) → inference records, one per row of
//! the batch dimension. Pure: no I/O, no async.
//!
//! - Tensors are read from their typed `contents` or from `raw_*_contents` (little-endian,
//!   row-major; BYTES as a 4-byte little-endian length then the bytes), for BOOL, INT8-64,
//!   UINT8-64, FP32, FP64 and BYTES (FP16/BF16 are not read).
//! - The first dimension is the batch: a tensor of shape `[rows, d1, d2, …]` gives each row
//!   `d1·d2·…` values; a tensor of shape `[n]` gives each of `n` rows one value. Every input and
//!   output of a call must agree on `rows`.
//! - Features: an input with one value per row is the feature `<input>`; with `n > 1` values the
//!   features `<input>_0` … `<input>_<n-1>`. BYTES inputs and the inputs listed in the mapping's
//!   `categorical_inputs` are categorical, the rest numeric.
//! - The model's schema (its `ModelMetadata`, [`Schema`]) when the tap has it: an input or output
//!   whose declared shape has the same rank as the tensor's and a fixed first dimension (not `-1`)
//!   equal to the tensor's has no batch dimension, so the whole tensor is one row; an input
//!   declared BYTES is categorical.
//! - Predictions come from the outputs the model's mapping names ([`TapModel`]); without a mapping,
//!   from the first output the schema declares (a number: a regression value; BYTES: the predicted
//!   class).
//! - Request ids: the call's id ([`CallContext::request_id`], else the request's `id`) for a
//!   one-row call, `<id>/<row>` for row `row` of a batch; none when there is no id.

use super::{schema::Schema, TapModel};
use crate::oip::{
    model_infer_request::InferInputTensor, model_infer_response::InferOutputTensor,
    InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use crate::pb;

/// Why a call's tensors could not be made into records.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("tensor {name}: datatype {datatype} is not read by the tap")]
    Datatype { name: String, datatype: String },
    #[error("tensor {name}: shape {shape:?} needs {expected} elements, the contents hold {found}")]
    Size {
        name: String,
        shape: Vec<i64>,
        expected: usize,
        found: usize,
    },
    #[error("tensor {name}: {rows} rows, but the call's other tensors have {expected}")]
    Rows {
        name: String,
        rows: usize,
        expected: usize,
    },
    #[error("tensor {name}: raw contents are not a whole number of {datatype} elements")]
    Raw { name: String, datatype: String },
    #[error("JSON: {0}")]
    Json(String),
    #[error("message: {0}")]
    Message(String),
    #[error("output {name}: class index {value} is not one of the {classes} declared classes")]
    ClassIndex {
        name: String,
        value: f64,
        classes: usize,
    },
}

/// A tensor element as the records need it.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Number(f64),
    Text(String),
}

/// A decoded tensor: `rows` rows of `width` elements each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// Dimensions of the tensor's shape.
    pub rank: usize,
    pub rows: usize,
    pub width: usize,
    pub values: Vec<Element>,
    pub bytes: bool,
}

impl Tensor {
    fn row(&self, row: usize) -> &[Element] {
        &self.values[row * self.width..(row + 1) * self.width]
    }
}

/// Decodes one tensor from its typed contents or its raw bytes.
pub fn decode(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<&InferTensorContents>,
    raw: Option<&[u8]>,
) -> Result<Tensor, TensorError> {
    let values = match raw {
        Some(raw) => decode_raw(name, datatype, raw)?,
        None => decode_typed(name, datatype, contents)?,
    };
    shaped(name, datatype, shape, values)
}

/// A tensor of `values` (row-major) checked against its shape.
pub fn shaped(
    name: &str,
    datatype: &str,
    shape: &[i64],
    values: Vec<Element>,
) -> Result<Tensor, TensorError> {
    let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let expected: usize = dims.iter().product();
    if expected != values.len() {
        return Err(TensorError::Size {
            name: name.to_owned(),
            shape: shape.to_vec(),
            expected,
            found: values.len(),
        });
    }
    let (rows, width) = match dims.split_first() {
        None => (1, 1),
        Some((&rows, rest)) => (rows, rest.iter().product()),
    };
    Ok(Tensor {
        name: name.to_owned(),
        rank: dims.len(),
        rows,
        width,
        values,
        bytes: datatype == "BYTES",
    })
}

/// Whether the datatype is one the tap reads.
pub fn readable(datatype: &str) -> bool {
    matches!(
        datatype,
        "BOOL"
            | "INT8"
            | "INT16"
            | "INT32"
            | "INT64"
            | "UINT8"
            | "UINT16"
            | "UINT32"
            | "UINT64"
            | "FP32"
            | "FP64"
            | "BYTES"
    )
}

pub(crate) fn unsupported(name: &str, datatype: &str) -> TensorError {
    TensorError::Datatype {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
    }
}

fn decode_typed(
    name: &str,
    datatype: &str,
    contents: Option<&InferTensorContents>,
) -> Result<Vec<Element>, TensorError> {
    let empty = InferTensorContents::default();
    let c = contents.unwrap_or(&empty);
    let numbers = |v: Vec<f64>| v.into_iter().map(Element::Number).collect();
    Ok(match datatype {
        "BOOL" => numbers(
            c.bool_contents
                .iter()
                .map(|&b| f64::from(u8::from(b)))
                .collect(),
        ),
        "INT8" | "INT16" | "INT32" => numbers(c.int_contents.iter().map(|&v| v.into()).collect()),
        "INT64" => numbers(c.int64_contents.iter().map(|&v| v as f64).collect()),
        "UINT8" | "UINT16" | "UINT32" => {
            numbers(c.uint_contents.iter().map(|&v| v.into()).collect())
        }
        "UINT64" => numbers(c.uint64_contents.iter().map(|&v| v as f64).collect()),
        "FP32" => numbers(c.fp32_contents.iter().map(|&v| v.into()).collect()),
        "FP64" => numbers(c.fp64_contents.clone()),
        "BYTES" => c
            .bytes_contents
            .iter()
            .map(|b| Element::Text(String::from_utf8_lossy(b).into_owned()))
            .collect(),
        _ => return Err(unsupported(name, datatype)),
    })
}

fn decode_raw(name: &str, datatype: &str, raw: &[u8]) -> Result<Vec<Element>, TensorError> {
    let bad = || TensorError::Raw {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
    };
    if datatype == "BYTES" {
        let mut out = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(bad());
            }
            out.push(Element::Text(
                String::from_utf8_lossy(&tail[..len]).into_owned(),
            ));
            rest = &tail[len..];
        }
        return Ok(out);
    }
    let width = match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return Err(unsupported(name, datatype)),
    };
    if !raw.len().is_multiple_of(width) {
        return Err(bad());
    }
    Ok(raw
        .chunks_exact(width)
        .map(|b| {
            let mut a = [0u8; 8];
            a[..width].copy_from_slice(b);
            Element::Number(match datatype {
                "BOOL" | "UINT8" => f64::from(b[0]),
                "INT8" => f64::from(b[0] as i8),
                "INT16" => f64::from(i16::from_le_bytes([b[0], b[1]])),
                "UINT16" => f64::from(u16::from_le_bytes([b[0], b[1]])),
                "INT32" => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                "UINT32" => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                "FP32" => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                "INT64" => i64::from_le_bytes(a) as f64,
                "UINT64" => u64::from_le_bytes(a) as f64,
                _ => f64::from_le_bytes(a),
            })
        })
        .collect())
}

/// Decodes a message's tensors, each `(name, datatype, shape, contents)`, from their typed
/// contents or, when the message has any, from `raw` (one entry per tensor, in order).
fn tensors<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a str, &'a [i64], Option<&'a InferTensorContents>)>,
    raw: &[Vec<u8>],
) -> Result<Vec<Tensor>, TensorError> {
    tensors
        .enumerate()
        .map(|(i, (name, datatype, shape, contents))| {
            let raw = (!raw.is_empty()).then(|| raw.get(i).map_or(&[][..], |b| &b[..]));
            decode(name, datatype, shape, contents, raw)
        })
        .collect()
}

pub(crate) fn inputs(request: &ModelInferRequest) -> Result<Vec<Tensor>, TensorError> {
    let each = request.inputs.iter().map(|t: &InferInputTensor| {
        (
            t.name.as_str(),
            t.datatype.as_str(),
            &t.shape[..],
            t.contents.as_ref(),
        )
    });
    tensors(each, &request.raw_input_contents)
}

pub(crate) fn outputs(response: &ModelInferResponse) -> Result<Vec<Tensor>, TensorError> {
    let each = response.outputs.iter().map(|t: &InferOutputTensor| {
        (
            t.name.as_str(),
            t.datatype.as_str(),
            &t.shape[..],
            t.contents.as_ref(),
        )
    });
    tensors(each, &response.raw_output_contents)
}

/// The rows every tensor agrees on (1 when there is no tensor).
fn rows(tensors: &[&Tensor]) -> Result<usize, TensorError> {
    let Some(first) = tensors.first() else {
        return Ok(1);
    };
    for t in tensors {
        if t.rows != first.rows {
            return Err(TensorError::Rows {
                name: t.name.clone(),
                rows: t.rows,
                expected: first.rows,
            });
        }
    }
    Ok(first.rows)
}

/// What the tap knows about one call besides its messages.
pub struct CallContext<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub mapping: Option<&'a TapModel>,
    pub time_unix_nano: u64,
    pub latency_seconds: f64,
    /// The gRPC code's name when the upstream failed the call.
    pub error_type: Option<&'a str>,
    pub traceparent: &'a str,
    pub tracestate: &'a str,
    /// The call's id when the tap took it from elsewhere than the request's `id` (a header, a
    /// request parameter, the response's `id`).
    pub request_id: Option<&'a str>,
    /// The model's schema from its `ModelMetadata`, when the tap has read it.
    pub schema: Option<&'a Schema>,
}

/// The call's records, one per row. A failed call whose request cannot be read still gives one
/// error record (without features); a successful one gives none and an error.
pub fn records(
    request: &ModelInferRequest,
    response: Option<&ModelInferResponse>,
    ctx: &CallContext<'_>,
) -> Result<Vec<pb::InferenceRecord>, TensorError> {
    let id = ctx.request_id.unwrap_or(&request.id);
    records_of(inputs(request), response.map(outputs).transpose(), id, ctx)
}

/// The records of a call's decoded tensors, whatever their wire (gRPC messages, REST JSON):
/// `outputs` is `None` for a failed call, `id` the call's request id.
pub fn records_of(
    inputs: Result<Vec<Tensor>, TensorError>,
    outputs: Result<Option<Vec<Tensor>>, TensorError>,
    id: &str,
    ctx: &CallContext<'_>,
) -> Result<Vec<pb::InferenceRecord>, TensorError> {
    let mut inputs = match inputs {
        Ok(inputs) => inputs,
        Err(_) if ctx.error_type.is_some() => {
            return Ok(vec![record(ctx, request_id(id, 0, 1))]);
        }
        Err(e) => return Err(e),
    };
    let answered = matches!(outputs, Ok(Some(_)));
    let mut outputs = outputs?.unwrap_or_default();
    if let Some(schema) = ctx.schema {
        unbatch(&mut inputs, &schema.inputs);
        unbatch(&mut outputs, &schema.outputs);
    }
    let all: Vec<&Tensor> = inputs.iter().chain(outputs.iter()).collect();
    let n = match rows(&all) {
        Ok(n) => n,
        Err(_) if ctx.error_type.is_some() => {
            return Ok(vec![record(ctx, request_id(id, 0, 1))]);
        }
        Err(e) => return Err(e),
    };
    // Without a mapping, the schema's first output is the prediction.
    let from_schema = ctx
        .mapping
        .is_none()
        .then(|| ctx.schema.and_then(|s| s.outputs.first()))
        .flatten()
        .map(|o| TapModel {
            prediction_output: Some(o.name.clone()),
            ..Default::default()
        });
    // A mapped output the caller did not ask for is absent: the records go without it.
    let find = |name: &str| outputs.iter().find(|t| t.name == name);
    let mapping = ctx.mapping.or(from_schema.as_ref()).filter(|_| answered);
    let prediction = mapping.and_then(|m| m.prediction_output.as_deref().and_then(find));
    let probabilities = mapping.and_then(|m| m.probabilities_output.as_deref().and_then(find));
    let categorical = |t: &Tensor| {
        t.bytes
            || ctx
                .mapping
                .is_some_and(|m| m.categorical_inputs.contains(&t.name))
            || ctx.schema.is_some_and(|s| {
                s.inputs
                    .iter()
                    .any(|i| i.name == t.name && i.datatype == "BYTES")
            })
    };

    let mut out = Vec::with_capacity(n);
    for row in 0..n {
        let mut r = record(ctx, request_id(id, row, n));
        for t in &inputs {
            let cat = categorical(t);
            for (j, v) in t.row(row).iter().enumerate() {
                let name = if t.width == 1 {
                    t.name.clone()
                } else {
                    format!("{}_{j}", t.name)
                };
                let value = match (v, cat) {
                    (Element::Text(s), _) => pb::named_feature::Value::Category(s.clone()),
                    (Element::Number(x), true) => pb::named_feature::Value::Category(x.to_string()),
                    (Element::Number(x), false) => pb::named_feature::Value::Number(*x),
                };
                r.named_features.push(pb::NamedFeature {
                    name,
                    value: Some(value),
                });
            }
        }
        if let Some(m) = mapping {
            r.prediction = prediction_of(m, prediction, probabilities, row)?;
        }
        out.push(r);
    }
    Ok(out)
}

/// Tensors whose declared shape has no batch dimension (same rank, a first dimension that is not
/// `-1` and is the tensor's) become one row.
fn unbatch(tensors: &mut [Tensor], declared: &[super::schema::TensorMeta]) {
    for t in tensors {
        let Some(meta) = declared.iter().find(|m| m.name == t.name) else {
            continue;
        };
        // A declared first dimension the call does not have (`[1, 4]` declared, a batch of 8
        // sent): the declaration is not the call's shape, rows as usual.
        let first = meta.shape.first().copied();
        if t.rank > 0
            && meta.shape.len() == t.rank
            && first != Some(-1)
            && first == Some(t.rows as i64)
        {
            t.width *= t.rows;
            t.rows = 1;
        }
    }
}

fn request_id(id: &str, row: usize, rows: usize) -> String {
    match (id.is_empty(), rows) {
        (true, _) => String::new(),
        (false, 1) => id.to_owned(),
        (false, _) => format!("{id}/{row}"),
    }
}

fn record(ctx: &CallContext<'_>, request_id: String) -> pb::InferenceRecord {
    pb::InferenceRecord {
        model: ctx.model.to_owned(),
        version: ctx.version.to_owned(),
        request_id,
        time_unix_nano: ctx.time_unix_nano,
        latency_seconds: Some(ctx.latency_seconds),
        error_type: ctx.error_type.unwrap_or_default().to_owned(),
        traceparent: ctx.traceparent.to_owned(),
        tracestate: ctx.tracestate.to_owned(),
        ..Default::default()
    }
}

/// The row's prediction as the mapping says: a classification when it names classes, else a
/// regression from the prediction output's first value.
fn prediction_of(
    m: &TapModel,
    prediction: Option<&Tensor>,
    probabilities: Option<&Tensor>,
    row: usize,
) -> Result<Option<pb::inference_record::Prediction>, TensorError> {
    use pb::inference_record::Prediction;
    let first = |t: &Tensor| t.row(row).first().cloned();
    if prediction.is_none() && probabilities.is_none() {
        return Ok(None);
    }
    if m.class_names.is_empty() {
        return Ok(match prediction.and_then(first) {
            Some(Element::Number(v)) => Some(Prediction::Regression(pb::Regression { value: v })),
            // A label without declared classes (the model's own class names).
            Some(Element::Text(s)) => Some(Prediction::Classification(pb::Classification {
                predicted_class: s,
                ..Default::default()
            })),
            None => None,
        });
    }
    let mut c = pb::Classification::default();
    match prediction.map(|t| (t, first(t))) {
        Some((_, Some(Element::Text(s)))) => c.predicted_class = s,
        Some((t, Some(Element::Number(v)))) => {
            // A class index, or a class label that is a number (scikit-learn's `predict` of a
            // model trained on integer labels): the class whose name is that number first.
            let label = format_number(v);
            if m.class_names.contains(&label) {
                c.predicted_class = label;
            } else if v >= 0.0 && v.fract() == 0.0 && (v as usize) < m.class_names.len() {
                c.predicted_class_index = Some(v as u32);
            } else {
                return Err(TensorError::ClassIndex {
                    name: t.name.clone(),
                    value: v,
                    classes: m.class_names.len(),
                });
            }
        }
        _ => {}
    }
    if let Some(t) = probabilities {
        c.class_probabilities = t
            .row(row)
            .iter()
            .filter_map(|e| match e {
                Element::Number(p) => Some(*p),
                Element::Text(_) => None,
            })
            .collect();
        if m.class_names.len() == 2 && c.class_probabilities.len() == 2 {
            let positive = m
                .positive_class
                .as_ref()
                .and_then(|p| m.class_names.iter().position(|n| n == p))
                .unwrap_or(1);
            c.score = Some(c.class_probabilities[positive]);
        }
    }
    Ok(Some(Prediction::Classification(c)))
}

/// An integer-valued number without a fraction ("2", not "2.0"), as class labels are written.
fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oip::model_infer_response::InferOutputTensor as Out;

    fn input(
        name: &str,
        datatype: &str,
        shape: &[i64],
        c: InferTensorContents,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            contents: Some(c),
            ..Default::default()
        }
    }

    fn ctx<'a>(m: Option<&'a TapModel>, error: Option<&'a str>) -> CallContext<'a> {
        CallContext {
            model: "iris",
            version: "v1",
            mapping: m,
            time_unix_nano: 7,
            latency_seconds: 0.01,
            error_type: error,
            traceparent: "",
            tracestate: "",
            request_id: None,
            schema: None,
        }
    }

    fn numbers(r: &pb::InferenceRecord) -> Vec<(String, f64)> {
        r.named_features
            .iter()
            .filter_map(|f| match &f.value {
                Some(pb::named_feature::Value::Number(x)) => Some((f.name.clone(), *x)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_batch_becomes_one_record_per_row_with_positional_features() {
        let request = ModelInferRequest {
            model_name: "iris".into(),
            id: "r".into(),
            inputs: vec![
                input(
                    "x",
                    "FP32",
                    &[2, 2],
                    InferTensorContents {
                        fp32_contents: vec![1.0, 2.0, 3.0, 4.0],
                        ..Default::default()
                    },
                ),
                input(
                    "color",
                    "BYTES",
                    &[2],
                    InferTensorContents {
                        bytes_contents: vec![b"red".to_vec(), b"blue".to_vec()],
                        ..Default::default()
                    },
                ),
            ],
            ..Default::default()
        };
        let response = ModelInferResponse {
            outputs: vec![
                Out {
                    name: "predict".into(),
                    datatype: "INT64".into(),
                    shape: vec![2, 1],
                    contents: Some(InferTensorContents {
                        int64_contents: vec![1, 0],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Out {
                    name: "predict_proba".into(),
                    datatype: "FP64".into(),
                    shape: vec![2, 2],
                    contents: Some(InferTensorContents {
                        fp64_contents: vec![0.25, 0.75, 0.9, 0.1],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let m = TapModel {
            class_names: vec!["0".into(), "1".into()],
            prediction_output: Some("predict".into()),
            probabilities_output: Some("predict_proba".into()),
            ..Default::default()
        };
        let r = records(&request, Some(&response), &ctx(Some(&m), None)).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].request_id, "r/0");
        assert_eq!(r[1].request_id, "r/1");
        assert_eq!(
            numbers(&r[1]),
            vec![("x_0".into(), 3.0), ("x_1".into(), 4.0)]
        );
        assert_eq!(
            r[1].named_features[2].value,
            Some(pb::named_feature::Value::Category("blue".into()))
        );
        let Some(pb::inference_record::Prediction::Classification(c)) = &r[0].prediction else {
            panic!("no classification");
        };
        assert_eq!(c.predicted_class, "1");
        assert_eq!(c.class_probabilities, vec![0.25, 0.75]);
        assert_eq!(c.score, Some(0.75));
    }

    #[test]
    fn raw_contents_are_little_endian_row_major() {
        let mut raw = Vec::new();
        for v in [1.5f64, -2.0, 3.25] {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let t = decode("x", "FP64", &[3], None, Some(&raw)).unwrap();
        assert_eq!((t.rows, t.width), (3, 1));
        assert_eq!(t.values[2], Element::Number(3.25));
        let ints: Vec<u8> = [-3i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = decode("i", "INT32", &[1, 2], None, Some(&ints)).unwrap();
        assert_eq!(t.values, vec![Element::Number(-3.0), Element::Number(7.0)]);
        let mut bytes = 2u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"ok");
        let t = decode("s", "BYTES", &[1], None, Some(&bytes)).unwrap();
        assert_eq!(t.values, vec![Element::Text("ok".into())]);
        assert!(matches!(
            decode("x", "FP64", &[3], None, Some(&raw[..20])),
            Err(TensorError::Raw { .. })
        ));
    }

    #[test]
    fn a_shape_that_disagrees_is_an_error_unless_the_call_failed() {
        let request = ModelInferRequest {
            id: "bad".into(),
            inputs: vec![input(
                "x",
                "FP32",
                &[2, 4],
                InferTensorContents {
                    fp32_contents: vec![1.0; 3],
                    ..Default::default()
                },
            )],
            ..Default::default()
        };
        assert!(matches!(
            records(&request, None, &ctx(None, None)),
            Err(TensorError::Size {
                expected: 8,
                found: 3,
                ..
            })
        ));
        let r = records(&request, None, &ctx(None, Some("INVALID_ARGUMENT"))).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].error_type, "INVALID_ARGUMENT");
        assert_eq!(r[0].request_id, "bad");
        assert!(r[0].named_features.is_empty());
    }

    #[test]
    fn class_indices_and_regressions() {
        let out = |v: f64| ModelInferResponse {
            outputs: vec![Out {
                name: "y".into(),
                datatype: "FP64".into(),
                shape: vec![1],
                contents: Some(InferTensorContents {
                    fp64_contents: vec![v],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = ModelInferRequest::default();
        let regression = TapModel {
            prediction_output: Some("y".into()),
            ..Default::default()
        };
        let r = records(&request, Some(&out(2.5)), &ctx(Some(&regression), None)).unwrap();
        assert_eq!(
            r[0].prediction,
            Some(pb::inference_record::Prediction::Regression(
                pb::Regression { value: 2.5 }
            ))
        );
        let classes = TapModel {
            class_names: vec!["setosa".into(), "versicolor".into(), "virginica".into()],
            ..regression
        };
        let r = records(&request, Some(&out(2.0)), &ctx(Some(&classes), None)).unwrap();
        let Some(pb::inference_record::Prediction::Classification(c)) = &r[0].prediction else {
            panic!("no classification");
        };
        assert_eq!(c.predicted_class_index, Some(2));
        assert!(matches!(
            records(&request, Some(&out(3.0)), &ctx(Some(&classes), None)),
            Err(TensorError::ClassIndex { .. })
        ));
        // A mapped output the caller did not request: records without a prediction.
        let r = records(
            &request,
            Some(&ModelInferResponse::default()),
            &ctx(Some(&classes), None),
        )
        .unwrap();
        assert_eq!(r[0].prediction, None);
    }

    #[test]
    fn a_schema_without_a_batch_dimension_makes_one_row_and_names_the_prediction() {
        use crate::tap::schema::{Schema, TensorMeta};
        let meta = |name: &str, datatype: &str, shape: &[i64]| TensorMeta {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        };
        let request = ModelInferRequest {
            id: "r".into(),
            inputs: vec![
                input(
                    "x",
                    "FP32",
                    &[3],
                    InferTensorContents {
                        fp32_contents: vec![1.0, 2.0, 3.0],
                        ..Default::default()
                    },
                ),
                input(
                    "code",
                    "INT32",
                    &[1],
                    InferTensorContents {
                        int_contents: vec![7],
                        ..Default::default()
                    },
                ),
            ],
            ..Default::default()
        };
        let response = ModelInferResponse {
            outputs: vec![Out {
                name: "label".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                contents: Some(InferTensorContents {
                    bytes_contents: vec![b"cat".to_vec()],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        // Without a schema: three rows of x (and code's one row disagrees).
        assert!(matches!(
            records(&request, Some(&response), &ctx(None, None)),
            Err(TensorError::Rows { .. })
        ));
        let schema = Schema {
            inputs: vec![meta("x", "FP32", &[3]), meta("code", "BYTES", &[1])],
            outputs: vec![meta("label", "BYTES", &[1])],
        };
        let c = CallContext {
            schema: Some(&schema),
            ..ctx(None, None)
        };
        let r = records(&request, Some(&response), &c).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].request_id, "r");
        assert_eq!(numbers(&r[0]).len(), 3);
        // Declared BYTES: categorical.
        assert_eq!(
            r[0].named_features[3].value,
            Some(pb::named_feature::Value::Category("7".into()))
        );
        let Some(pb::inference_record::Prediction::Classification(p)) = &r[0].prediction else {
            panic!("the schema's output is the prediction");
        };
        assert_eq!(p.predicted_class, "cat");
        // A batch dimension declared: rows as usual.
        let batched = Schema {
            inputs: vec![meta("x", "FP32", &[-1])],
            outputs: vec![],
        };
        let c = CallContext {
            schema: Some(&batched),
            ..ctx(None, None)
        };
        let one = ModelInferRequest {
            inputs: vec![request.inputs[0].clone()],
            ..request.clone()
        };
        assert_eq!(records(&one, None, &c).unwrap().len(), 3);
    }
}
