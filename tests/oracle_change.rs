//! Change detectors against their oracles: the streams of `tests/data/change.json` (written by
//! `tests/oracles/change.py` with river's PageHinkley and ADWIN, and NumPy implementations of
//! the CUSUM and EWMA charts) must give the same detection indices, exactly.

mod common;

use common::golden::floats;
use inferscope::stats::change::{Adwin, Cusum, Direction, Ewma, PageHinkley};
use serde_json::Value;

enum Detector {
    PageHinkley(PageHinkley),
    Adwin(Adwin),
    Cusum(Cusum),
    Ewma(Ewma),
}

impl Detector {
    fn named(name: &str) -> Self {
        match name {
            "page_hinkley_default" => Self::PageHinkley(PageHinkley::default()),
            "page_hinkley_sensitive_up" => Self::PageHinkley(PageHinkley::new(
                10,
                0.01,
                10.0,
                1.0 - 0.0001,
                Direction::Up,
            )),
            "page_hinkley_down" => Self::PageHinkley(PageHinkley::new(
                30,
                0.005,
                20.0,
                1.0 - 0.0001,
                Direction::Down,
            )),
            "adwin_default" => Self::Adwin(Adwin::default()),
            "adwin_clock_1" => Self::Adwin(Adwin::new(0.01, 1, 3, 3, 5)),
            "cusum_default" => Self::Cusum(Cusum::default()),
            "cusum_wide" => Self::Cusum(Cusum::new(100, 1.0, 8.0)),
            "ewma_default" => Self::Ewma(Ewma::default()),
            "ewma_slow" => Self::Ewma(Ewma::new(100, 0.05, 2.7)),
            other => panic!("unknown detector {other} in tests/data/change.json"),
        }
    }

    fn update(&mut self, x: f64) -> bool {
        match self {
            Self::PageHinkley(d) => d.update(x),
            Self::Adwin(d) => d.update(x),
            Self::Cusum(d) => d.update(x),
            Self::Ewma(d) => d.update(x),
        }
    }
}

#[test]
fn detections_match_their_oracles_exactly() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/change.json");
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for case in data["cases"].as_array().unwrap() {
        let (stream, detector) = (
            case["stream"].as_str().unwrap(),
            case["detector"].as_str().unwrap(),
        );
        let values = floats(&data["streams"][stream]);
        let mut d = Detector::named(detector);
        let got: Vec<u64> = values
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| d.update(v).then_some(i as u64))
            .collect();
        let want: Vec<u64> = case["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        if got != want {
            failures.push(format!(
                "{stream} {detector}: inferscope {got:?}, river {want:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
