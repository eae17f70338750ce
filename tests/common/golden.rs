//! The golden quality datasets of `tests/data/quality.json` (written by
//! `tests/oracles/quality.py` with scikit-learn), as records, labels and declarations.

use inferscope::pb;
use serde_json::Value;

pub fn datasets() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/quality.json"
    ))
    .expect("tests/data/quality.json (run tests/oracles/quality.py)");
    let json: Value = serde_json::from_str(&text).unwrap();
    json["datasets"].as_array().unwrap().clone()
}

pub fn declaration(ds: &Value) -> Option<pb::ModelDeclaration> {
    let name = ds["name"].as_str().unwrap();
    let classes: Vec<String> = ds["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let task = match ds["task"].as_str().unwrap() {
        "binary" => pb::TaskType::BinaryClassification,
        "multiclass" => pb::TaskType::MulticlassClassification,
        "regression" => pb::TaskType::Regression,
        _ => return None,
    };
    Some(pb::ModelDeclaration {
        model: name.into(),
        version: "1".into(),
        task: task as i32,
        positive_class: if task == pb::TaskType::BinaryClassification {
            "pos".into()
        } else {
            String::new()
        },
        class_names: classes,
        ..Default::default()
    })
}

/// The label of row `i`, as a multiclass class index, a class name, or a regression value.
pub fn label(ds: &Value, row: &Value) -> pb::Label {
    use pb::label::Value as L;
    let value = match (ds["task"].as_str().unwrap(), &row["y"]) {
        ("multiclass", y) => {
            let classes = ds["classes"].as_array().unwrap();
            L::ClassIndex(classes.iter().position(|c| c == y).unwrap() as u32)
        }
        (_, Value::String(s)) => L::ClassName(s.clone()),
        (_, y) => L::RegressionValue(y.as_f64().unwrap()),
    };
    pb::Label { value: Some(value) }
}

pub fn prediction(row: &Value) -> pb::inference_record::Prediction {
    use pb::inference_record::Prediction as P;
    if let Some(v) = row.get("value") {
        return P::Regression(pb::Regression {
            value: v.as_f64().unwrap(),
        });
    }
    let mut c = pb::Classification::default();
    if let Some(s) = row.get("score") {
        c.score = Some(s.as_f64().unwrap());
    }
    if let Some(ps) = row.get("probabilities") {
        c.class_probabilities = ps
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
    }
    if let Some(name) = row.get("predicted") {
        c.predicted_class = name.as_str().unwrap().into();
    }
    P::Classification(c)
}

/// A JSON array of numbers.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}
