//! Reference profiles in a running sidecar: captured from a model version's first records, and
//! loaded, replaced and removed in `--profiles-dir` without a restart.

mod common;

use inferscope::{
    drift::profile::{FeatureProfile, NumericColumn, Profile, ProfileSettings, FORMAT},
    export::metrics::SidecarSnapshot,
    models::ModelKey,
    pb,
};
use std::time::{Duration, Instant};

fn declaration() -> pb::ModelDeclaration {
    pb::ModelDeclaration {
        model: "m".into(),
        version: "1".into(),
        features: vec![pb::FeatureSpec {
            name: "x".into(),
            kind: pb::FeatureKind::Numeric as i32,
        }],
        ..Default::default()
    }
}

async fn send(client: &mut common::TestClient, sequence: u64, values: &[f64]) {
    let mut batch = common::batch(sequence, "m", Vec::new());
    batch.declarations = vec![declaration()];
    batch.records = values
        .iter()
        .map(|&v| pb::InferenceRecord {
            numeric_features: vec![v],
            ..Default::default()
        })
        .collect();
    let ack = client.submit_records(batch).await.unwrap().into_inner();
    assert!(ack.rejects.is_empty(), "{:?}", ack.rejects);
}

/// (profile source, values of x in the since-start window), if the model has drift.
fn drift_of(snapshot: &SidecarSnapshot) -> Option<(String, u64)> {
    let d = snapshot.drift.get(&ModelKey::new("m", "1"))?;
    let all = d.windows.last()?;
    Some((d.source.clone(), all.features[0].values))
}

fn profile(source: &str, values: impl Iterator<Item = f64>) -> Profile {
    let mut column = NumericColumn::default();
    for v in values {
        column.push(Some(v));
    }
    Profile {
        format: FORMAT.into(),
        model: "m".into(),
        version: "1".into(),
        source: source.into(),
        created_unix_seconds: 0,
        records: 100,
        features: vec![FeatureProfile::Numeric(column.finish(
            "x",
            ProfileSettings::default(),
            1,
        ))],
    }
}

/// Sends a record and looks at the snapshot until the model's profile source is `want`.
async fn wait_for(
    sidecar: &common::TestSidecar,
    client: &mut common::TestClient,
    sequence: &mut u64,
    want: Option<&str>,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        *sequence += 1;
        send(client, *sequence, &[1.0]).await;
        let got = drift_of(&sidecar.sidecar.snapshot().await).map(|d| d.0);
        if got.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got:?}, waiting for {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_profile_is_captured_from_the_first_records() {
    let mut config = common::config();
    config.drift.reference_records = 50;
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;
    let first: Vec<f64> = (0..50).map(f64::from).collect();
    send(&mut client, 0, &first).await;
    send(&mut client, 1, &[1000.0; 30]).await; // far outside the captured range
    let snapshot = sidecar.sidecar.snapshot().await;
    assert_eq!(drift_of(&snapshot), Some(("live:first-50".into(), 30)));
    let d = &snapshot.drift[&ModelKey::new("m", "1")];
    let x = &d.windows.last().unwrap().features[0];
    assert_eq!(x.out_of_range_rate, Some(1.0));
    assert!(x.drifted && d.windows.last().unwrap().dataset_drift);
    // The change is a span of its own with one event per feature that started drifting.
    let (_, spans) = sidecar.stop().await;
    let drift = spans
        .iter()
        .find(|s| s.name == "inferscope.drift")
        .expect("a drift span");
    let event = drift
        .events
        .iter()
        .find(|e| e.name == "inferscope.drift.detected")
        .expect("a detected event");
    let attribute = |key: &str| {
        event
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("feature").as_deref(), Some("x"));
    assert_eq!(attribute("method").as_deref(), Some("psi"));
    assert!(attribute("score").is_some_and(|s| s.parse::<f64>().unwrap() >= 0.2));
}

#[tokio::test]
async fn profiles_are_loaded_replaced_and_removed_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("inferscope-profiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = common::config();
    config.profiles_dir = Some(dir.clone());
    config.profiles_poll = Duration::from_millis(50);
    config.drift.reference_records = 0;
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;

    // The sidecar sees the directory's state within a few polls; a batch makes the shard look.
    let mut sequence = 0;
    wait_for(&sidecar, &mut client, &mut sequence, None).await;
    let path = dir.join("m.json");
    let write = |p: &Profile| std::fs::write(&path, serde_json::to_string(p).unwrap()).unwrap();
    write(&profile("first", (0..100).map(f64::from)));
    wait_for(&sidecar, &mut client, &mut sequence, Some("first")).await;
    write(&profile("second", (0..100).map(|v| f64::from(v) * 2.0)));
    wait_for(&sidecar, &mut client, &mut sequence, Some("second")).await;
    std::fs::remove_file(&path).unwrap();
    wait_for(&sidecar, &mut client, &mut sequence, None).await;
    let _ = std::fs::remove_dir_all(&dir);
    // Stop before the runtime ends: dropping a live tracer provider during runtime teardown
    // waits on its batch task, which can no longer run.
    sidecar.stop().await;
}

#[tokio::test]
async fn a_reference_is_captured_on_request() {
    let mut config = common::config();
    config.drift.reference_records = 0;
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;
    send(&mut client, 0, &[1.0, 2.0]).await;
    assert_eq!(drift_of(&sidecar.sidecar.snapshot().await), None);
    let taken = client
        .capture_reference(pb::CaptureReferenceRequest {
            model: "m".into(),
            version: "1".into(),
            records: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(taken.records, 20);
    let pinned: Vec<f64> = (0..20).map(f64::from).collect();
    send(&mut client, 1, &pinned).await;
    send(&mut client, 2, &[5.0; 7]).await;
    assert_eq!(
        drift_of(&sidecar.sidecar.snapshot().await),
        Some(("live:first-20".into(), 7))
    );
    let status = client
        .capture_reference(pb::CaptureReferenceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("model:"),
        "{}",
        status.message()
    );
    sidecar.stop().await;
}

#[tokio::test]
async fn odd_values_come_back_flagged_in_the_ack() {
    let mut config = common::config();
    config.drift.reference_records = 20;
    // Robust z-scores have their own oracle test (tests/oracle_anomaly.rs).
    config.anomaly.defaults = std::sync::Arc::new(inferscope::anomaly::AnomalySettings {
        feature_outlier_z: 0.0,
        ..Default::default()
    });
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;
    let reference: Vec<f64> = (0..20).map(f64::from).collect();
    send(&mut client, 0, &reference).await;
    let mut batch = common::batch(1, "m", Vec::new());
    batch.records = [5.0, f64::NAN, f64::INFINITY, 57.0]
        .iter()
        .map(|&v| pb::InferenceRecord {
            numeric_features: vec![v],
            ..Default::default()
        })
        .collect();
    let ack = client.submit_records(batch).await.unwrap().into_inner();
    let flags: Vec<(u32, String, String, f64)> = ack
        .flags
        .iter()
        .flat_map(|r| {
            r.anomalies
                .iter()
                .map(move |a| (r.index, a.kind.clone(), a.subject.clone(), a.score))
        })
        .collect();
    // 57 is 38 past the reference's max of 19, in units of its range (19).
    assert_eq!(
        flags,
        vec![
            (1, "missing_feature".into(), "x".into(), 1.0),
            (2, "non_finite_feature".into(), "x".into(), 1.0),
            (3, "out_of_reference_range".into(), "x".into(), 2.0),
        ]
    );
    let (request, spans) = sidecar.stop().await;
    let model = [
        ("inferscope.model.name", "m"),
        ("inferscope.model.version", "1"),
    ];
    for kind in [
        "missing_feature",
        "non_finite_feature",
        "out_of_reference_range",
    ] {
        let at = [model[0], model[1], ("kind", kind)];
        assert_eq!(
            common::point(&request, "inferscope.anomalies", &at),
            Some(1.0),
            "{kind}"
        );
    }
    // Flagged records get a span whatever the sampling (0 here), with the flag as an event.
    let flagged: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "inferscope.inference")
        .collect();
    assert_eq!(flagged.len(), 3);
    assert!(flagged
        .iter()
        .all(|s| s.events.iter().any(|e| e.name == "inferscope.anomaly")));
}

/// The distinct `feature` attributes of `name`'s points for model `model`.
fn features_of(
    export: &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
    name: &str,
    model: &str,
) -> std::collections::BTreeSet<String> {
    use opentelemetry_proto::tonic::{common::v1::any_value::Value, metrics::v1::metric::Data};
    let Some(Data::Gauge(gauge)) = common::metric(export, name).and_then(|m| m.data.as_ref())
    else {
        return Default::default();
    };
    let text = |point: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint, key: &str| {
        point
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
    };
    gauge
        .data_points
        .iter()
        .filter(|p| text(p, "inferscope.model.name").as_deref() == Some(model))
        .filter_map(|p| text(p, "feature"))
        .collect()
}

/// The feature-name bomb (issue 14, problem 3): records that bring new feature names without
/// end make each model track at most `--max-features-per-model` of them (the first its capture
/// meets), and every occurrence of a name past the bound is counted, from the model's start.
#[tokio::test]
async fn feature_names_past_the_bound_are_counted_not_tracked() {
    const BOUND: usize = 16;
    const MODELS: usize = 4;
    // As many as the capture takes: every name below reaches it.
    const RECORDS: usize = 50;
    // Names every record repeats, and names new in each record (2000 per model).
    const SHARED: usize = 10;
    const NEW: usize = 40;
    let mut config = common::config();
    config.drift.reference_records = RECORDS;
    config.drift.max_features = BOUND;
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;

    let names = |r: usize| {
        (0..SHARED)
            .map(|j| format!("shared_{j}"))
            .chain((0..NEW).map(move |j| format!("new_{r}_{j}")))
    };
    // The capture takes names in the order it meets them until it has BOUND.
    let mut tracked = std::collections::BTreeSet::new();
    let mut past_the_bound = 0;
    for name in (0..RECORDS).flat_map(names) {
        if !tracked.contains(&name) {
            if tracked.len() < BOUND {
                tracked.insert(name);
            } else {
                past_the_bound += 1;
            }
        }
    }
    let record = |r: usize, names: Vec<String>| pb::InferenceRecord {
        named_features: names
            .into_iter()
            .map(|name| pb::NamedFeature {
                name,
                value: Some(pb::named_feature::Value::Number(r as f64)),
            })
            .collect(),
        ..Default::default()
    };
    let mut sequence = 0;
    let mut submit = async |model: &str, records: Vec<pb::InferenceRecord>| {
        sequence += 1;
        let batch = common::batch(sequence, model, records);
        let ack = client.submit_records(batch).await.unwrap().into_inner();
        assert!(ack.rejects.is_empty(), "{:?}", ack.rejects);
    };
    for m in 0..MODELS {
        let records = (0..RECORDS)
            .map(|r| record(r, names(r).collect()))
            .collect();
        submit(&format!("bomb-{m}"), records).await;
    }
    // A model far from the bound, still capturing, counts zero.
    submit("small", vec![record(0, vec!["a".into(), "b".into()])]).await;

    let (export, _) = sidecar.stop().await;
    for m in 0..MODELS {
        let model = format!("bomb-{m}");
        let features = features_of(&export, "inferscope.drift.sample_size", &model);
        assert_eq!(features, tracked, "{model}: {} features", features.len());
        assert_eq!(
            common::point(
                &export,
                "inferscope.drift.features_overflow",
                &[
                    ("inferscope.model.name", &model),
                    ("inferscope.model.version", "1")
                ]
            ),
            Some(past_the_bound as f64),
            "{model}"
        );
    }
    assert_eq!(
        past_the_bound,
        RECORDS * (SHARED + NEW) - SHARED * RECORDS - (BOUND - SHARED)
    );
    assert_eq!(
        common::point(
            &export,
            "inferscope.drift.features_overflow",
            &[
                ("inferscope.model.name", "small"),
                ("inferscope.model.version", "1")
            ]
        ),
        Some(0.0)
    );
}

/// The reference in use is visible in the backend: its source and when it was taken.
#[tokio::test]
async fn the_reference_in_use_is_exported_with_its_source_and_time() {
    let mut config = common::config();
    config.drift.reference_records = 50;
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let first: Vec<f64> = (0..50).map(f64::from).collect();
    send(&mut client, 0, &first).await;
    let (request, _) = sidecar.stop().await;
    let at = [
        ("inferscope.model.name", "m"),
        ("inferscope.model.version", "1"),
        ("source", "live:first-50"),
    ];
    assert_eq!(
        common::point(&request, "inferscope.drift.reference.info", &at),
        Some(1.0)
    );
    let created = common::point(&request, "inferscope.drift.reference.created_time", &at)
        .expect("the capture time");
    assert!(
        created >= before.floor() && created <= before + 60.0,
        "{created} vs {before}"
    );
}

/// The source of the reference `ExportReference` answers for m/1.
async fn exported_source(client: &mut common::TestClient) -> String {
    let json = client
        .export_reference(pb::ExportReferenceRequest {
            model: "m".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .profile_json;
    serde_json::from_str::<Profile>(&json).unwrap().source
}

#[tokio::test]
async fn at_start_the_reference_written_last_wins() {
    // A saved capture (--state-dir) and a profile file (--profiles-dir) for one version: before
    // the restart the later of the two was in use, so after it too.
    for (file_is_newer, want) in [(true, "training.csv"), (false, "live:first-100")] {
        let dir = common::tls::temp_dir(&format!("written-last-{file_is_newer}"));
        let (state, profiles) = (dir.join("state"), dir.join("profiles"));
        std::fs::create_dir_all(state.join("references")).unwrap();
        std::fs::create_dir_all(&profiles).unwrap();
        let write = |path: std::path::PathBuf, source: &str, age: u64| {
            let json = serde_json::to_string(&profile(source, (0..100).map(f64::from))).unwrap();
            std::fs::write(&path, json).unwrap();
            let when = std::time::SystemTime::now() - Duration::from_secs(age);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        let (file_age, saved_age) = if file_is_newer { (10, 20) } else { (20, 10) };
        write(profiles.join("m.json"), "training.csv", file_age);
        write(
            state.join("references/saved.profile.json"),
            "live:first-100",
            saved_age,
        );
        let sidecar = common::start(inferscope::config::Config {
            state_dir: Some(state),
            profiles_dir: Some(profiles),
            ..common::config()
        })
        .await;
        let mut client = sidecar.client().await;
        assert_eq!(exported_source(&mut client).await, want);
        sidecar.stop().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
