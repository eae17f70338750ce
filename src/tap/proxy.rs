//! The gRPC side's router: `ModelInfer` goes to the tonic service that records it ([`Tap`]);
//! every other path (the protocol's other calls, Triton's and MLServer's `ModelStreamInfer`, the
//! model repository, health, reflection, any unknown service or method) is forwarded to the
//! upstream as opaque HTTP/2: headers, every message and the trailers as they come, both ways,
//! never decoded on the way.
//!
//! `ModelStreamInfer` is also recorded: the messages of the stream are cut out of the gRPC framing
//! as they pass (a copy of each message's bytes, at most [`MAX_MESSAGE_BYTES`] each), each
//! response is paired with the request of the same `id` (else the oldest unanswered one), and
//! the pair goes to the recorder through the queue (`try_reserve`, as a unary call). A stream's
//! requests left unanswered when it ends with an error status become error records. Compressed
//! messages and streams past [`PENDING`] unanswered requests are forwarded and not recorded.

use super::{body::Observer, body::Tee, Call, Exchange, Tap, MAX_MESSAGE_BYTES};
use crate::{
    oip::grpc_inference_service_server::GrpcInferenceServiceServer,
    self_metrics::{SelfCounter, SelfStats},
};
use axum::{body::Bytes, extract::State, response::Response};
use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Instant, SystemTime},
};
use tokio::sync::mpsc;
use tonic::{
    codegen::{http::HeaderMap, Service},
    transport::Channel,
};

/// The path of the one call the tonic service intercepts.
pub const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
/// The streaming call whose messages are recorded.
pub const MODEL_STREAM_INFER: &str = "/inference.GRPCInferenceService/ModelStreamInfer";
/// Unanswered requests of one stream the tap keeps at most; past it the stream is no longer
/// recorded (a model that answers nothing, or a decoupled one that answers late).
pub const PENDING: usize = 64;

#[derive(Clone)]
struct Raw {
    channel: Channel,
    calls: mpsc::Sender<Call>,
    stats: Arc<SelfStats>,
}

/// The gRPC side: `ModelInfer` to `tap`, everything else to `channel` unchanged.
pub(super) fn router(
    service: GrpcInferenceServiceServer<Tap>,
    channel: Channel,
    calls: mpsc::Sender<Call>,
    stats: Arc<SelfStats>,
) -> axum::Router {
    axum::Router::new()
        .route_service(MODEL_INFER, service)
        .fallback(forward)
        .with_state(Raw {
            channel,
            calls,
            stats,
        })
}

async fn forward(State(raw): State<Raw>, request: axum::extract::Request) -> Response {
    let stream = (request.uri().path() == MODEL_STREAM_INFER).then(|| {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Arc::new(Mutex::new(Stream {
            pending: VecDeque::new(),
            broken: false,
            traceparent: header("traceparent"),
            tracestate: header("tracestate"),
        }))
    });
    let observer = stream.as_ref().map(|s| {
        Box::new(Requests {
            frames: Frames::default(),
            stream: s.clone(),
            stats: raw.stats.clone(),
        }) as Box<dyn Observer>
    });
    let request = request.map(|b| tonic::body::Body::new(Tee::new(b, observer)));
    let mut channel = raw.channel.clone();
    let answered = match std::future::poll_fn(|cx| channel.poll_ready(cx)).await {
        Ok(()) => channel.call(request).await,
        Err(e) => Err(e),
    };
    let response = match answered {
        Ok(response) => response,
        Err(e) => {
            // As a gRPC client sees an unreachable server: UNAVAILABLE.
            let status = tonic::Status::unavailable(format!("the tap's upstream: {e}"));
            if let Some(s) = &stream {
                s.lock().unwrap_or_else(|e| e.into_inner()).fail(
                    tonic::Code::Unavailable,
                    &raw.calls,
                    &raw.stats,
                );
            }
            return status.into_http::<axum::body::Body>();
        }
    };
    let (parts, body) = response.into_parts();
    let observer = stream.map(|stream| {
        Box::new(Responses {
            frames: Frames::default(),
            // A trailers-only answer carries its status in the headers.
            code: grpc_status(&parts.headers),
            stream,
            calls: raw.calls.clone(),
            stats: raw.stats.clone(),
        }) as Box<dyn Observer>
    });
    Response::from_parts(parts, axum::body::Body::new(Tee::new(body, observer)))
}

fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(tonic::Code::from_i32(code))
}

/// Cuts gRPC messages (1 byte compressed flag, 4 bytes big-endian length, the message) out of
/// the bytes of a body as they come.
#[derive(Default)]
pub struct Frames {
    header: Vec<u8>,
    message: Vec<u8>,
    /// The current message's length once its header is whole.
    want: Option<usize>,
    /// A compressed or oversized message was seen: the stream can no longer be followed.
    pub broken: bool,
}

impl Frames {
    /// Feeds `data`; each whole message is handed to `each`.
    pub fn feed(&mut self, mut data: &[u8], mut each: impl FnMut(Vec<u8>)) {
        while !data.is_empty() && !self.broken {
            match self.want {
                None => {
                    let take = (5 - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == 5 {
                        let len = u32::from_be_bytes([
                            self.header[1],
                            self.header[2],
                            self.header[3],
                            self.header[4],
                        ]) as usize;
                        if self.header[0] != 0 || len > MAX_MESSAGE_BYTES {
                            self.broken = true;
                            return;
                        }
                        self.header.clear();
                        self.want = Some(len);
                        self.message = Vec::with_capacity(len);
                    }
                }
                Some(len) => {
                    let take = (len - self.message.len()).min(data.len());
                    self.message.extend_from_slice(&data[..take]);
                    data = &data[take..];
                }
            }
            if self.want == Some(self.message.len()) {
                self.want = None;
                each(std::mem::take(&mut self.message));
            }
        }
    }
}

/// The `string` field `field` at the top level of a protobuf message (or of its message field
/// `inside`, when given), read without decoding the rest.
pub fn string_field(mut message: &[u8], inside: Option<u32>, field: u32) -> Option<String> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    while !message.is_empty() {
        let (tag, wire) = decode_key(&mut message).ok()?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut message).ok()?;
            }
            WireType::SixtyFourBit => message = message.get(8..)?,
            WireType::ThirtyTwoBit => message = message.get(4..)?,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut message).ok()? as usize;
                let value = message.get(..len)?;
                message = &message[len..];
                match inside {
                    Some(outer) if tag == outer => return string_field(value, None, field),
                    None if tag == field => return String::from_utf8(value.to_vec()).ok(),
                    _ => {}
                }
            }
            _ => return None,
        }
    }
    None
}

/// A request waiting for its answer.
struct Pending {
    id: String,
    message: Bytes,
    started: SystemTime,
    clock: Instant,
}

/// One `ModelStreamInfer` stream being recorded.
struct Stream {
    pending: VecDeque<Pending>,
    /// No longer recorded (see the module's doc).
    broken: bool,
    traceparent: String,
    tracestate: String,
}

impl Stream {
    fn send(
        &self,
        request: Pending,
        outcome: Result<Bytes, tonic::Code>,
        calls: &mpsc::Sender<Call>,
        stats: &SelfStats,
    ) {
        let call = Call {
            exchange: Exchange::Stream {
                request: request.message,
                outcome,
            },
            started: request.started,
            latency: request.clock.elapsed(),
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
            header_id: None,
        };
        if calls.try_send(call).is_err() {
            stats
                .counter(SelfCounter::TapDropped)
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The stream ended with `code`: its unanswered requests are error records.
    fn fail(&mut self, code: tonic::Code, calls: &mpsc::Sender<Call>, stats: &SelfStats) {
        if code == tonic::Code::Ok || self.broken {
            return;
        }
        while let Some(request) = self.pending.pop_front() {
            self.send(request, Err(code), calls, stats);
        }
    }

    fn give_up(&mut self, stats: &SelfStats) {
        if !self.broken {
            self.broken = true;
            stats
                .counter(SelfCounter::TapUnreadable)
                .fetch_add(1, Ordering::Relaxed);
        }
        self.pending.clear();
    }
}

struct Requests {
    frames: Frames,
    stream: Arc<Mutex<Stream>>,
    stats: Arc<SelfStats>,
}

impl Observer for Requests {
    fn data(&mut self, data: &Bytes) {
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        if stream.broken {
            return;
        }
        let mut whole = Vec::new();
        self.frames.feed(data, |m| whole.push(m));
        for message in whole {
            if stream.pending.len() >= PENDING {
                stream.give_up(&self.stats);
                return;
            }
            stream.pending.push_back(Pending {
                id: string_field(&message, None, 3).unwrap_or_default(),
                message: Bytes::from(message),
                started: SystemTime::now(),
                clock: Instant::now(),
            });
        }
        if self.frames.broken {
            stream.give_up(&self.stats);
        }
    }

    fn end(&mut self) {}
}

struct Responses {
    frames: Frames,
    code: Option<tonic::Code>,
    stream: Arc<Mutex<Stream>>,
    calls: mpsc::Sender<Call>,
    stats: Arc<SelfStats>,
}

impl Observer for Responses {
    fn data(&mut self, data: &Bytes) {
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        if stream.broken {
            return;
        }
        let mut whole = Vec::new();
        self.frames.feed(data, |m| whole.push(m));
        for message in whole {
            // MLServer answers ModelInferResponse (id: field 3), Triton ModelStreamInferResponse
            // (the response in field 2, its id in its field 3).
            let id = string_field(&message, None, 3)
                .or_else(|| string_field(&message, Some(2), 3))
                .unwrap_or_default();
            let at = stream
                .pending
                .iter()
                .position(|p| !id.is_empty() && p.id == id)
                .or((!stream.pending.is_empty()).then_some(0));
            // A response to no waiting request (a decoupled model's later ones): not recorded.
            if let Some(request) = at.and_then(|i| stream.pending.remove(i)) {
                stream.send(request, Ok(Bytes::from(message)), &self.calls, &self.stats);
            }
        }
        if self.frames.broken {
            stream.give_up(&self.stats);
        }
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        self.code = grpc_status(trailers).or(self.code);
    }

    fn end(&mut self) {
        if let Some(code) = self.code {
            self.stream.lock().unwrap_or_else(|e| e.into_inner()).fail(
                code,
                &self.calls,
                &self.stats,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oip::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
    use prost::Message;

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn messages_are_cut_out_of_any_chunking() {
        let a = ModelInferRequest {
            id: "a".into(),
            model_name: "m".into(),
            ..Default::default()
        };
        let b = ModelInferRequest {
            id: "b".into(),
            ..Default::default()
        };
        let mut bytes = framed(&a);
        bytes.extend(framed(&b));
        for chunk in [1, 2, 3, 7, bytes.len()] {
            let mut frames = Frames::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                frames.feed(piece, |m| {
                    got.push(ModelInferRequest::decode(&m[..]).unwrap())
                });
            }
            assert_eq!(got, vec![a.clone(), b.clone()], "chunks of {chunk}");
        }
        let mut compressed = framed(&a);
        compressed[0] = 1;
        let mut frames = Frames::default();
        frames.feed(&compressed, |_| panic!("a compressed message is not read"));
        assert!(frames.broken);
    }

    #[test]
    fn ids_are_read_from_either_response_form() {
        let plain = ModelInferResponse {
            model_name: "m".into(),
            id: "x1".into(),
            ..Default::default()
        };
        let triton = ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(plain.clone()),
        };
        assert_eq!(
            string_field(&plain.encode_to_vec(), None, 3).as_deref(),
            Some("x1")
        );
        let t = triton.encode_to_vec();
        assert_eq!(string_field(&t, None, 3), None);
        assert_eq!(string_field(&t, Some(2), 3).as_deref(), Some("x1"));
    }
}
