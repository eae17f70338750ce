//! The OpenTelemetry resource: who is reporting. Built from the standard detectors
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `telemetry.sdk.*`), with `service.name`
//! defaulting to `inferscope`, and the Kubernetes attributes a Downward-API manifest sets.

use opentelemetry::{KeyValue, Value};
use opentelemetry_proto::tonic::common::v1 as proto;
use opentelemetry_sdk::Resource;

/// Environment variables a pod manifest fills from the Downward API, and the resource attribute
/// (OpenTelemetry `k8s.*` semantic conventions) each becomes.
pub const KUBERNETES_ENV: &[(&str, &str)] = &[
    ("K8S_POD_NAME", "k8s.pod.name"),
    ("K8S_POD_UID", "k8s.pod.uid"),
    ("K8S_NAMESPACE_NAME", "k8s.namespace.name"),
    ("K8S_NODE_NAME", "k8s.node.name"),
];

pub const DEFAULT_SERVICE_NAME: &str = "inferscope";

/// The resource of this process.
pub fn detect() -> Resource {
    let detected = Resource::builder().build();
    let mut builder = Resource::builder();
    let service_name = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map(|v| v.to_string());
    if service_name.is_none_or(|name| name.starts_with("unknown_service")) {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    let mut extra = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    for (var, attribute) in KUBERNETES_ENV {
        if let Ok(value) = std::env::var(var) {
            if !value.is_empty() {
                extra.push(KeyValue::new(*attribute, value));
            }
        }
    }
    // One instance per pod: the pod uid when known, else a random id for this process.
    let instance = std::env::var("K8S_POD_UID")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    if detected
        .get(&opentelemetry::Key::from_static_str("service.instance.id"))
        .is_none()
    {
        extra.push(KeyValue::new("service.instance.id", instance));
    }
    builder.with_attributes(extra).build()
}

/// Resource attributes that describe a deployment, not one process: the fleet's series
/// (`src/fleet.rs`) carry only these, so that they stay one series whichever sidecar exports them.
pub const FLEET_ATTRIBUTES: &[&str] = &[
    "service.name",
    "service.namespace",
    "k8s.namespace.name",
    "k8s.deployment.name",
    "deployment.environment.name",
];

/// The fleet's resource: the attributes of `attributes` listed in [`FLEET_ATTRIBUTES`].
pub fn fleet_attributes(attributes: &[proto::KeyValue]) -> Vec<proto::KeyValue> {
    attributes
        .iter()
        .filter(|kv| FLEET_ATTRIBUTES.contains(&kv.key.as_str()))
        .cloned()
        .collect()
}

/// The resource's `service.instance.id` (always set by [`detect`]).
pub fn instance_id(attributes: &[proto::KeyValue]) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == "service.instance.id")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            proto::any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

/// The resource's attributes as OTLP protobuf key-values.
pub fn to_proto(resource: &Resource) -> Vec<proto::KeyValue> {
    resource
        .iter()
        .map(|(key, value)| proto::KeyValue {
            key: key.to_string(),
            value: Some(any_value(value)),
            ..Default::default()
        })
        .collect()
}

fn any_value(value: &Value) -> proto::AnyValue {
    use proto::any_value::Value as V;
    let value = match value {
        Value::Bool(b) => V::BoolValue(*b),
        Value::I64(i) => V::IntValue(*i),
        Value::F64(f) => V::DoubleValue(*f),
        other => V::StringValue(other.to_string()),
    };
    proto::AnyValue { value: Some(value) }
}

/// A string attribute in OTLP form.
pub fn attribute(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue {
            value: Some(proto::any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_defaults_to_inferscope_and_has_an_instance_id() {
        let resource = detect();
        let get = |k: &'static str| resource.get(&opentelemetry::Key::from_static_str(k));
        // OTEL_SERVICE_NAME is not set in the test environment.
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            assert_eq!(get("service.name").unwrap().to_string(), "inferscope");
        }
        assert!(get("service.instance.id").is_some());
        assert!(get("telemetry.sdk.name").is_some());
    }
}
