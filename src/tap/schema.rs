//! Models' schemas from the model server's `ModelMetadata`: the declared inputs and outputs (name,
//! datatype, shape) that tell [`records`](super::records) which tensors have a batch dimension,
//! which inputs are categorical and, without a mapping, which output is the prediction.
//!
//! Read by the recorder task, never on a caller's path: once per model and version (the version a
//! successful call was answered with), cached for at most [`REMEMBERED`] models, read again when
//! the model answers with another version. A read that fails or takes longer than
//! [`FETCH_TIMEOUT`] leaves the model without a schema until its version changes: logged once per
//! model and version (warn) and counted in `inferscope.tap.schemas.unread`, never retried in a
//! loop. Past [`REMEMBERED`] models a new model is not read: counted once per model (the first
//! [`REMEMBERED`] of them; logged once). Only a call the model answered leads to a read, so a
//! caller's made-up model names cost none.

use crate::oip::{
    grpc_inference_service_client::GrpcInferenceServiceClient, ModelMetadataRequest,
    ModelMetadataResponse,
};
use crate::self_metrics::{SelfCounter, SelfStats};
use serde::Deserialize;
use std::{
    collections::{HashMap, HashSet},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};
use tonic::transport::Channel;

/// How long the recorder waits for one `ModelMetadata` answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Models whose schema (or whose failed read) is remembered at most; past it, new models are
/// recorded without a schema.
pub const REMEMBERED: usize = 1024;
/// A metadata answer larger than this is not read.
const MAX_METADATA_BYTES: usize = 1 << 20;

/// One declared tensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: String,
    #[serde(default)]
    pub shape: Vec<i64>,
}

/// What a model's `ModelMetadata` declares.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Schema {
    #[serde(default)]
    pub inputs: Vec<TensorMeta>,
    #[serde(default)]
    pub outputs: Vec<TensorMeta>,
}

impl From<ModelMetadataResponse> for Schema {
    fn from(m: ModelMetadataResponse) -> Self {
        let each = |t: Vec<crate::oip::model_metadata_response::TensorMetadata>| {
            t.into_iter()
                .map(|t| TensorMeta {
                    name: t.name,
                    datatype: t.datatype,
                    shape: t.shape,
                })
                .collect()
        };
        Schema {
            inputs: each(m.inputs),
            outputs: each(m.outputs),
        }
    }
}

/// Where the schemas are read: the upstream's gRPC port, else its REST port.
#[derive(Clone)]
pub enum Source {
    Grpc(GrpcInferenceServiceClient<Channel>),
    /// A client and the REST upstream's base URL (no trailing slash).
    Rest(reqwest::Client, String),
    /// `[tap] read_metadata = false`.
    Off,
}

impl Source {
    async fn fetch(&self, model: &str, version: &str) -> Result<Schema, String> {
        match self {
            Source::Grpc(client) => {
                let mut request = tonic::Request::new(ModelMetadataRequest {
                    name: model.to_owned(),
                    version: version.to_owned(),
                });
                request.set_timeout(FETCH_TIMEOUT);
                client
                    .clone()
                    .model_metadata(request)
                    .await
                    .map(|r| r.into_inner().into())
                    .map_err(|s| format!("{}: {}", super::code_name(s.code()), s.message()))
            }
            Source::Rest(client, base) => {
                let url = if version.is_empty() {
                    format!("{base}/v2/models/{model}")
                } else {
                    format!("{base}/v2/models/{model}/versions/{version}")
                };
                let response = client
                    .get(url)
                    .timeout(FETCH_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                if body.len() > MAX_METADATA_BYTES {
                    return Err(format!("{} bytes of metadata", body.len()));
                }
                serde_json::from_slice(&body).map_err(|e| e.to_string())
            }
            Source::Off => Err("off".into()),
        }
    }
}

struct Entry {
    version: String,
    schema: Option<Arc<Schema>>,
}

/// The recorder's cache of schemas.
pub struct Schemas {
    source: Source,
    entries: HashMap<String, Entry>,
    /// Models not read because the cache was full, each counted once (at most [`REMEMBERED`] of
    /// them are told apart; past that they are no longer counted).
    unread: HashSet<String>,
    stats: Arc<SelfStats>,
}

impl Schemas {
    pub fn new(source: Source, stats: Arc<SelfStats>) -> Self {
        Schemas {
            source,
            entries: HashMap::new(),
            unread: HashSet::new(),
            stats,
        }
    }

    fn count_unread(&self) {
        self.stats
            .counter(SelfCounter::TapSchemasUnread)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The schema the recorder has for `model`, without reading it.
    pub fn cached(&self, model: &str) -> Option<Arc<Schema>> {
        self.entries.get(model).and_then(|e| e.schema.clone())
    }

    /// The schema of `model` as answered with `version`: read once, and again when the version
    /// changes (a failed read is not repeated for the same version).
    pub async fn get(&mut self, model: &str, version: &str) -> Option<Arc<Schema>> {
        if matches!(self.source, Source::Off) || model.is_empty() {
            return None;
        }
        if let Some(e) = self.entries.get(model) {
            if e.version == version {
                return e.schema.clone();
            }
        } else if self.entries.len() >= REMEMBERED {
            if self.unread.len() < REMEMBERED && self.unread.insert(model.to_owned()) {
                if self.unread.len() == 1 {
                    tracing::warn!(
                        model,
                        remembered = REMEMBERED,
                        "the tap remembers the schemas of {REMEMBERED} models already: this model \
                         and further ones are recorded without a schema (counted in \
                         inferscope.tap.schemas.unread)"
                    );
                }
                self.count_unread();
            }
            return None;
        }
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.source.fetch(model, version))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")));
        let schema = match fetched {
            Ok(schema) => {
                tracing::debug!(model, version, ?schema, "the tap read a model's schema");
                Some(Arc::new(schema))
            }
            Err(error) => {
                self.count_unread();
                tracing::warn!(
                    model,
                    version,
                    error,
                    "the tap could not read the model's ModelMetadata: its records go without a \
                     schema until it answers with another version"
                );
                None
            }
        };
        self.entries.insert(
            model.to_owned(),
            Entry {
                version: version.to_owned(),
                schema: schema.clone(),
            },
        );
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read that fails counts once per model version; past the cache, once per model.
    #[tokio::test]
    async fn models_recorded_without_a_schema_are_counted() {
        let stats = Arc::new(SelfStats::default());
        let unread = || stats.get(SelfCounter::TapSchemasUnread);
        // Nothing listens on port 9 of loopback: the read fails at once.
        let source = Source::Rest(reqwest::Client::new(), "http://127.0.0.1:9".into());
        let mut schemas = Schemas::new(source, stats.clone());
        assert!(schemas.get("m", "1").await.is_none());
        assert!(schemas.get("m", "1").await.is_none());
        assert_eq!(
            unread(),
            1,
            "a failed read is counted once per model version"
        );
        assert!(schemas.get("m", "2").await.is_none());
        assert_eq!(unread(), 2);
        for i in schemas.entries.len()..REMEMBERED {
            schemas.entries.insert(
                format!("filler{i}"),
                Entry {
                    version: "1".into(),
                    schema: None,
                },
            );
        }
        assert!(schemas.get("new", "1").await.is_none());
        assert!(schemas.get("new", "2").await.is_none());
        assert!(schemas.get("another", "1").await.is_none());
        assert_eq!(unread(), 4, "past the cache, each new model counts once");
    }

    #[test]
    fn rest_metadata_is_read_as_the_grpc_one() {
        let json = r#"{"name":"credit","versions":["v1"],"platform":"",
            "inputs":[{"name":"input-0","datatype":"FP64","shape":[-1,4]}],
            "outputs":[{"name":"predict","datatype":"INT64","shape":[-1,1],"parameters":{}}]}"#;
        let schema: Schema = serde_json::from_str(json).unwrap();
        assert_eq!(schema.inputs[0].shape, vec![-1, 4]);
        assert_eq!(schema.outputs[0].name, "predict");
        // MLServer without declared tensors: none.
        let schema: Schema = serde_json::from_str(r#"{"name":"m","versions":[]}"#).unwrap();
        assert_eq!(schema, Schema::default());
    }
}
