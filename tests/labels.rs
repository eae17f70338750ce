//! The label join seen from a client: delay histogram from the record and label timestamps,
//! class names beyond `--max-classes` folded into `__other__`, inline-labelled records that get a
//! second label.

mod common;

use inferscope::pb;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn classification(class: &str) -> Option<pb::inference_record::Prediction> {
    Some(pb::inference_record::Prediction::Classification(
        pb::Classification {
            predicted_class: class.into(),
            ..Default::default()
        },
    ))
}

fn class_label(class: &str) -> Option<pb::Label> {
    Some(pb::Label {
        value: Some(pb::label::Value::ClassName(class.into())),
    })
}

#[tokio::test]
async fn label_delay_is_measured_from_the_record_and_label_times() {
    let sidecar = common::start(common::config()).await;
    let mut client = sidecar.client().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let at = |ago: u64| (now - Duration::from_secs(ago)).as_nanos() as u64;
    let records = [("a", 90), ("b", 4000), ("c", 0)]
        .iter()
        .map(|&(id, ago)| pb::InferenceRecord {
            request_id: id.into(),
            time_unix_nano: at(ago),
            prediction: classification("x"),
            // "c" carries its label inline.
            label: (id == "c").then(|| class_label("x")).flatten(),
            ..Default::default()
        })
        .collect();
    client
        .submit_records(common::batch(0, "m", records))
        .await
        .unwrap();
    let labels = ["a", "b", "c"]
        .iter()
        .map(|id| pb::GroundTruth {
            request_id: (*id).into(),
            label: class_label("y"),
            time_unix_nano: at(0),
            ..Default::default()
        })
        .collect();
    client
        .submit_labels(pb::LabelBatch {
            model: "m".into(),
            version: "1".into(),
            labels,
            ..Default::default()
        })
        .await
        .unwrap();
    let (request, _) = sidecar.stop().await;
    let model = [
        ("inferscope.model.name", "m"),
        ("inferscope.model.version", "1"),
    ];
    let delays = common::histograms(&request, "inferscope.labels.delay", &model);
    assert_eq!(delays.len(), 1);
    let h = delays[0];
    assert_eq!(h.count, 2, "a and b; c was labelled inline");
    assert!((h.sum.unwrap() - 4090.0).abs() < 1.0, "sum {:?}", h.sum);
    // 90 s falls in (60, 120], 4000 s in (3600, 7200].
    let bucket = |upper: f64| {
        let i = h.explicit_bounds.iter().position(|&b| b == upper).unwrap();
        h.bucket_counts[i]
    };
    assert_eq!((bucket(120.0), bucket(7200.0)), (1, 1));
    // "c" already had its label inline: the delayed one joins nothing and is held as an early
    // label (counted as unknown_request when the hold ends), never scored twice.
    let pairs = common::point(&request, "inferscope.quality.pairs", &model);
    assert_eq!(pairs, Some(3.0));
    assert_eq!(
        common::point(&request, "inferscope.labels.early", &model),
        Some(1.0)
    );
}

#[tokio::test]
async fn classes_past_the_cap_fold_into_other() {
    let mut config = common::config();
    config.quality.max_classes = 2;
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;
    let records = ["a", "b", "c", "d", "a"]
        .iter()
        .enumerate()
        .map(|(i, class)| pb::InferenceRecord {
            request_id: format!("r{i}"),
            prediction: classification(class),
            label: class_label(class),
            ..Default::default()
        })
        .collect();
    client
        .submit_records(common::batch(0, "m", records))
        .await
        .unwrap();
    let (request, _) = sidecar.stop().await;
    let at = |extra: &[(&'static str, &'static str)]| {
        let mut a = vec![
            ("inferscope.model.name", "m"),
            ("inferscope.model.version", "1"),
        ];
        a.extend_from_slice(extra);
        common::point(&request, "inferscope.quality.labels", &a)
    };
    assert_eq!(at(&[("class", "a")]), Some(2.0));
    assert_eq!(at(&[("class", "b")]), Some(1.0));
    assert_eq!(at(&[("class", "__other__")]), Some(2.0), "c and d");
    assert_eq!(at(&[("class", "c")]), None);
    // c and d, each seen as a prediction and as a label.
    assert_eq!(
        common::point(
            &request,
            "inferscope.classes.overflow",
            &[
                ("inferscope.model.name", "m"),
                ("inferscope.model.version", "1")
            ]
        ),
        Some(4.0)
    );
}
