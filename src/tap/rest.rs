//! The tap's REST/JSON twin (`--tap-http-listen`, `--tap-http-upstream`): an HTTP/1.1 reverse
//! proxy in front of the model server's REST port. Every request is forwarded unchanged (method,
//! path, query, headers but the hop-by-hop ones, body) and answered with the server's answer
//! unchanged (status, headers, body), both bodies streamed through as they come. A
//! `POST /v2/models/{name}[/versions/{version}]/infer` is also recorded: its request and response
//! bodies are copied on the way (at most [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES) each;
//! past it the call goes on unrecorded, counted in `inferscope.tap.unreadable`) and the pair goes
//! to the recorder through the same bounded queue as gRPC calls.
//!
//! JSON tensors follow the OIP REST spec: `inputs` / `outputs` with `name`, `shape`, `datatype`
//! and `data` (flat or nested, row-major; BYTES as strings), `parameters`, `id`; Triton's binary
//! tensor extension too (`Inference-Header-Content-Length`, a tensor's
//! `parameters.binary_data_size` bytes after the JSON, in tensor order).

use super::{
    body::{Capture, Captured, Observer, Tee},
    records::{self, Element, Tensor, TensorError},
    Call, Exchange, RestHalf, MAX_MESSAGE_BYTES,
};
use crate::self_metrics::{SelfCounter, SelfStats};
use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};
use std::{
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::{header, HeaderMap, HeaderName, Method, StatusCode};

/// The header giving the length of the JSON part of a body with binary tensors (Triton).
const HEADER_LENGTH: &str = "inference-header-content-length";
/// After shutdown, connections still open (a request that never ends) are waited for this long.
const GRACE: Duration = Duration::from_secs(5);

/// A REST infer path's model and version (empty when the path names none).
pub fn infer_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let (model, version) = match rest.split_once("/versions/") {
        Some((model, version)) => (model, version),
        None => (rest, ""),
    };
    let plain = |s: &str| !s.contains('/');
    (!model.is_empty() && plain(model) && plain(version)).then_some((model, version))
}

/// One REST message (an infer request or response) as the recorder reads it.
#[derive(Debug)]
pub struct Message {
    pub id: String,
    pub model_name: String,
    pub model_version: String,
    pub parameters: Map<String, Value>,
    /// `inputs` of a request, `outputs` of a response.
    pub tensors: Result<Vec<Tensor>, TensorError>,
}

fn json_error(reason: impl Into<String>) -> TensorError {
    TensorError::Json(reason.into())
}

/// A string or a number, as a string (ids and id parameters).
pub fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a REST body: its JSON (the first `header_length` bytes when given, the binary tensors
/// after it) and its `tensors` (`"inputs"` or `"outputs"`).
pub fn parse(
    body: &[u8],
    header_length: Option<usize>,
    tensors: &str,
) -> Result<Message, TensorError> {
    let (json, mut binary) = match header_length {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(json_error(format!(
                "{HEADER_LENGTH} {n} is past the body's {} bytes",
                body.len()
            )))
        }
        None => (body, &[][..]),
    };
    let value: Value = serde_json::from_slice(json).map_err(|e| json_error(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(json_error("the body is not a JSON object"));
    };
    let text = |o: &Map<String, Value>, key: &str| {
        o.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let parameters = match object.remove("parameters") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    let each = match object.get(tensors) {
        Some(Value::Array(each)) => each.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err(json_error(format!("{tensors} is not an array"))),
    };
    let tensors = each.iter().map(|t| tensor(t, &mut binary)).collect();
    Ok(Message {
        id: id_of(object.get("id")).unwrap_or_default(),
        model_name: text(&object, "model_name"),
        model_version: text(&object, "model_version"),
        parameters,
        tensors,
    })
}

/// One JSON tensor: its `data`, or its `binary_data_size` bytes taken from `binary`.
fn tensor(t: &Value, binary: &mut &[u8]) -> Result<Tensor, TensorError> {
    let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
    let datatype = t
        .get("datatype")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let shape: Vec<i64> = match t.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_i64().filter(|d| *d >= 0))
            .collect::<Option<_>>()
            .ok_or_else(|| json_error(format!("tensor {name}: shape is not a list of sizes")))?,
        _ => return Err(json_error(format!("tensor {name}: no shape"))),
    };
    let binary_size = t
        .get("parameters")
        .and_then(|p| p.get("binary_data_size"))
        .and_then(Value::as_u64);
    if let Some(size) = binary_size {
        let size = size as usize;
        if size > binary.len() {
            return Err(json_error(format!(
                "tensor {name}: binary_data_size {size} is past the body"
            )));
        }
        let (raw, rest) = binary.split_at(size);
        *binary = rest;
        return records::decode(name, datatype, &shape, None, Some(raw));
    }
    // JSON numbers of any numeric datatype (FP16 and BF16 too: they are plain numbers here).
    let numeric = datatype != "BYTES"
        && (records::readable(datatype) || datatype == "FP16" || datatype == "BF16");
    if !numeric && datatype != "BYTES" {
        return Err(records::unsupported(name, datatype));
    }
    let mut values = Vec::new();
    if let Some(data) = t.get("data") {
        flatten(name, datatype, data, &mut values)?;
    }
    records::shaped(name, datatype, &shape, values)
}

/// `data`, flat or nested, row-major.
fn flatten(
    name: &str,
    datatype: &str,
    v: &Value,
    out: &mut Vec<Element>,
) -> Result<(), TensorError> {
    let element = match (v, datatype) {
        (Value::Array(each), _) => {
            for v in each {
                flatten(name, datatype, v, out)?;
            }
            return Ok(());
        }
        (Value::String(s), "BYTES") => Element::Text(s.clone()),
        (Value::Number(n), "BYTES") => Element::Text(n.to_string()),
        (Value::Bool(b), "BOOL") => Element::Number(f64::from(u8::from(*b))),
        // The value the model reads: FP32 data is parsed as a 32-bit float, as over gRPC.
        (Value::Number(n), "FP32" | "FP16" | "BF16") => {
            Element::Number(f64::from(n.as_f64().unwrap_or(f64::NAN) as f32))
        }
        (Value::Number(n), _) if datatype != "BYTES" => {
            Element::Number(n.as_f64().unwrap_or(f64::NAN))
        }
        _ => {
            return Err(json_error(format!(
                "tensor {name}: {v} is not a {datatype} element"
            )))
        }
    };
    out.push(element);
    Ok(())
}

/// The REST proxy's state.
#[derive(Clone)]
pub(super) struct RestTap {
    pub client: reqwest::Client,
    /// The upstream's base URL, without a trailing slash.
    pub upstream: String,
    pub calls: mpsc::Sender<Call>,
    pub stats: Arc<SelfStats>,
    pub id_header: Option<HeaderName>,
}

/// Serves the REST proxy until `shutdown` (then at most [`GRACE`] more for open requests).
pub(super) async fn serve(listener: TcpListener, tap: RestTap, shutdown: CancellationToken) {
    use axum::serve::ListenerExt;
    use std::future::IntoFuture;
    let router = axum::Router::new().fallback(proxy).with_state(tap);
    // The caller's latency is the model's: no Nagle delay between a response's writes.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let cut = async {
        shutdown.cancelled().await;
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        served = served => if let Err(e) = served {
            tracing::error!(error = %e, "the OIP tap's REST server failed");
        },
        _ = cut => tracing::warn!("REST requests through the tap still open after shutdown: no longer waited for"),
    }
}

/// Headers that belong to one hop, not forwarded either way (RFC 9110 7.6.1), and `host`
/// (the upstream's is set by the client).
fn strip_hop_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::HOST,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn header_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(HEADER_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A REST infer call being recorded: what the request carried, until the response's end.
struct Recording {
    permit: mpsc::OwnedPermit<Call>,
    model: String,
    version: String,
    request: Arc<Mutex<Captured>>,
    request_header_length: Option<usize>,
    traceparent: String,
    tracestate: String,
    header_id: Option<String>,
    started: SystemTime,
}

impl Recording {
    /// Sends the pair; a body not copied whole (past the bound, or cut short) is left for the
    /// recorder to count as unreadable.
    fn finish(self, status: u16, response: Option<(Bytes, Option<usize>)>, latency: Duration) {
        let request = self
            .request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes();
        self.permit.send(Call {
            exchange: Exchange::Rest(RestHalf {
                model: self.model,
                version: self.version,
                request: request.map(|b| (b, self.request_header_length)),
                status,
                response,
            }),
            started: self.started,
            latency,
            traceparent: self.traceparent,
            tracestate: self.tracestate,
            header_id: self.header_id,
        });
    }
}

use axum::body::Bytes;

async fn proxy(State(tap): State<RestTap>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", tap.upstream);
    let infer = (parts.method == Method::POST)
        .then(|| infer_path(parts.uri.path()))
        .flatten();
    // Room in the queue first: a full queue costs the call nothing, not even the copy.
    let permit = infer.and_then(|_| match tap.calls.clone().try_reserve_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            tap.stats
                .counter(SelfCounter::TapDropped)
                .fetch_add(1, Ordering::Relaxed);
            None
        }
    });
    let mut headers = parts.headers;
    let recording = permit.zip(infer).map(|(permit, (model, version))| {
        let value = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Recording {
            permit,
            model: model.to_owned(),
            version: version.to_owned(),
            request: Default::default(),
            request_header_length: header_length(&headers),
            traceparent: value("traceparent"),
            tracestate: value("tracestate"),
            header_id: tap
                .id_header
                .as_ref()
                .and_then(|h| headers.get(h))
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            started: SystemTime::now(),
        }
    });
    strip_hop_headers(&mut headers);
    let observer = recording.as_ref().map(|r| {
        Box::new(Capture {
            into: r.request.clone(),
            limit: MAX_MESSAGE_BYTES,
            then: None,
        }) as Box<dyn Observer>
    });
    let clock = Instant::now();
    let sent = tap
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(reqwest::Body::wrap(Tee::new(body, observer)))
        .send()
        .await;
    let latency = clock.elapsed();
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            // The model server did not answer: 502, recorded as an error record.
            if let Some(r) = recording {
                r.finish(502, None, latency);
            }
            tracing::debug!(error = %e, "the tap's REST upstream did not answer");
            return (
                StatusCode::BAD_GATEWAY,
                format!("the model server did not answer the tap: {e}"),
            )
                .into_response();
        }
    };
    let status = response.status().as_u16();
    let response: tonic::codegen::http::Response<reqwest::Body> = response.into();
    let (mut parts, body) = response.into_parts();
    let response_header_length = header_length(&parts.headers);
    strip_hop_headers(&mut parts.headers);
    let observer = recording.map(|r| {
        let into = Arc::new(Mutex::new(Captured::default()));
        let captured = into.clone();
        Box::new(Capture {
            into,
            limit: MAX_MESSAGE_BYTES,
            then: Some(Box::new(move || {
                let body = captured.lock().unwrap_or_else(|e| e.into_inner()).bytes();
                r.finish(status, body.map(|b| (b, response_header_length)), latency);
            })),
        }) as Box<dyn Observer>
    });
    Response::from_parts(parts, axum::body::Body::new(Tee::new(body, observer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(t: &Tensor) -> Vec<f64> {
        t.values
            .iter()
            .map(|e| match e {
                Element::Number(x) => *x,
                Element::Text(_) => f64::NAN,
            })
            .collect()
    }

    #[test]
    fn infer_paths_name_the_model_and_version() {
        assert_eq!(infer_path("/v2/models/credit/infer"), Some(("credit", "")));
        assert_eq!(
            infer_path("/v2/models/credit/versions/v1/infer"),
            Some(("credit", "v1"))
        );
        assert_eq!(infer_path("/v2/models/credit"), None);
        assert_eq!(infer_path("/v2/models/credit/ready"), None);
        assert_eq!(infer_path("/v2/models//infer"), None);
        assert_eq!(infer_path("/v2/models/a/b/infer"), None);
    }

    #[test]
    fn nested_and_flat_data_are_read_row_major() {
        let nested = br#"{"id":"r1","parameters":{"request_id":"p1"},"inputs":[
            {"name":"x","shape":[2,2],"datatype":"FP64","data":[[1.5,2],[3,4]]},
            {"name":"flag","shape":[2],"datatype":"BOOL","data":[true,false]}]}"#;
        let m = parse(nested, None, "inputs").unwrap();
        assert_eq!(m.id, "r1");
        assert_eq!(id_of(m.parameters.get("request_id")).as_deref(), Some("p1"));
        let t = m.tensors.unwrap();
        assert_eq!((t[0].rows, t[0].width), (2, 2));
        assert_eq!(numbers(&t[0]), vec![1.5, 2.0, 3.0, 4.0]);
        assert_eq!(numbers(&t[1]), vec![1.0, 0.0]);
        let flat =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP64","data":[1.5,2,3,4]}]}"#;
        let f = parse(flat, None, "inputs").unwrap().tensors.unwrap();
        assert_eq!(f[0].values, t[0].values);
        // FP32 data is what the model reads, a 32-bit float.
        let fp32 = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0.1]}]}"#;
        let f = parse(fp32, None, "inputs").unwrap().tensors.unwrap();
        assert_eq!(numbers(&f[0]), vec![f64::from(0.1f32)]);
    }

    #[test]
    fn bytes_are_text_and_bad_data_is_an_error() {
        let body =
            br#"{"outputs":[{"name":"label","shape":[2,1],"datatype":"BYTES","data":["yes","no"]}],
            "model_name":"m","model_version":"3","id":"x"}"#;
        let m = parse(body, None, "outputs").unwrap();
        assert_eq!(
            (m.model_name.as_str(), m.model_version.as_str()),
            ("m", "3")
        );
        let t = m.tensors.unwrap();
        assert!(t[0].bytes);
        assert_eq!(t[0].values[1], Element::Text("no".into()));
        let wrong = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":["a",1]}]}"#;
        assert!(matches!(
            parse(wrong, None, "inputs").unwrap().tensors,
            Err(TensorError::Json(_))
        ));
        let short = br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[1,2,3]}]}"#;
        assert!(matches!(
            parse(short, None, "inputs").unwrap().tensors,
            Err(TensorError::Size {
                expected: 4,
                found: 3,
                ..
            })
        ));
        assert!(parse(b"not json", None, "inputs").is_err());
    }

    #[test]
    fn binary_tensors_follow_the_json_header() {
        let json = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},
            {"name":"y","shape":[1],"datatype":"INT64","data":[7]}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.0f32).to_le_bytes());
        let t = parse(&body, Some(json.len()), "inputs")
            .unwrap()
            .tensors
            .unwrap();
        assert_eq!(numbers(&t[0]), vec![1.5, -2.0]);
        assert_eq!(numbers(&t[1]), vec![7.0]);
        assert!(parse(&body, Some(body.len() + 1), "inputs").is_err());
    }

    #[test]
    fn a_rest_batch_becomes_records_per_row_under_id_slash_row() {
        let request = br#"{"id":"b7","inputs":[{"name":"input-0","shape":[2,2],"datatype":"FP64","data":[[1,2],[3,4]]}]}"#;
        let response = br#"{"model_name":"credit","model_version":"v1","id":"b7","outputs":[
            {"name":"predict","shape":[2,1],"datatype":"INT64","data":[1,0]}]}"#;
        let request = parse(request, None, "inputs").unwrap();
        let response = parse(response, None, "outputs").unwrap();
        let m = super::super::TapModel {
            class_names: vec!["0".into(), "1".into()],
            prediction_output: Some("predict".into()),
            ..Default::default()
        };
        let ctx = records::CallContext {
            model: "credit",
            version: "v1",
            mapping: Some(&m),
            time_unix_nano: 1,
            latency_seconds: 0.001,
            error_type: None,
            traceparent: "",
            tracestate: "",
            request_id: None,
            schema: None,
        };
        let r = records::records_of(
            request.tensors,
            response.tensors.map(Some),
            &request.id,
            &ctx,
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].request_id, "b7/1");
        assert_eq!(r[1].named_features.len(), 2);
    }
}
