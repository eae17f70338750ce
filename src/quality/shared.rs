//! Pending predictions as bytes, for the label store a fleet shares (`--label-store
//! redis://…`, `src/label_store.rs`): what one sidecar writes, any other reads. A class is
//! written by name, never by this sidecar's class-table slot (slots differ between sidecars);
//! probabilities in declared order, which the fleet's declarations share.
//!
//! Written by hand: a handful of fixed little-endian fields, for which a serialization crate or
//! a protobuf schema would cost more than the format.
//!
//! Format 1: `[1][at_unix_ns: u64]` then `[0][value: f64]` (regression) or
//! `[1][name length: u16][name][scores]` (class), scores `[0]` none, `[1][p: f64]` the positive
//! class's probability, `[2][n: u16][n × f64]` probabilities; or `[2]` a generation (not written
//! today: generations wait in the shard that saw them, `label_join`).

use super::{ModelQuality, Prediction, Scores};

const FORMAT: u8 = 1;

impl ModelQuality {
    /// `prediction` made at `at_unix_ns`, as the shared store keeps it.
    pub fn encode_shared(&self, prediction: &Prediction, at_unix_ns: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(FORMAT);
        out.extend_from_slice(&at_unix_ns.to_le_bytes());
        match prediction {
            Prediction::Value(v) => {
                out.push(0);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Prediction::Generation(_) => out.push(2),
            Prediction::Class { slot, scores } => {
                out.push(1);
                let name = self.classes.names()[*slot as usize].as_bytes();
                let name = &name[..name.len().min(u16::MAX as usize)];
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(name);
                match scores {
                    Scores::None => out.push(0),
                    Scores::Positive(p) => {
                        out.push(1);
                        out.extend_from_slice(&p.to_le_bytes());
                    }
                    Scores::Two(_) | Scores::Probabilities(_) => {
                        let ps = scores.probabilities().expect("probability variants");
                        out.push(2);
                        out.extend_from_slice(&(ps.len() as u16).to_le_bytes());
                        for p in ps {
                            out.extend_from_slice(&p.to_le_bytes());
                        }
                    }
                }
            }
        }
        out
    }

    /// A prediction another sidecar (or this one) wrote, with its time; `None` when the bytes
    /// are not format 1. The class name takes (or makes) this sidecar's slot for it.
    pub fn decode_shared(&mut self, bytes: &[u8]) -> Option<(Prediction, u64)> {
        let mut r = Reader(bytes);
        if r.u8()? != FORMAT {
            return None;
        }
        let at = u64::from_le_bytes(r.take()?);
        let prediction = match r.u8()? {
            0 => Prediction::Value(f64::from_le_bytes(r.take()?)),
            1 => {
                let n = u16::from_le_bytes(r.take()?) as usize;
                let name = std::str::from_utf8(r.bytes(n)?).ok()?;
                let scores = match r.u8()? {
                    0 => Scores::None,
                    1 => Scores::Positive(f64::from_le_bytes(r.take()?)),
                    2 => {
                        let n = u16::from_le_bytes(r.take()?) as usize;
                        let ps = (0..n)
                            .map(|_| r.take().map(f64::from_le_bytes))
                            .collect::<Option<Vec<f64>>>()?;
                        match ps[..] {
                            [a, b] => Scores::Two([a, b]),
                            _ => Scores::Probabilities(ps.into_boxed_slice()),
                        }
                    }
                    _ => return None,
                };
                Prediction::Class {
                    slot: self.classes.slot(name),
                    scores,
                }
            }
            2 => Prediction::Generation(Default::default()),
            _ => return None,
        };
        r.0.is_empty().then_some((prediction, at))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{models::Declaration, pb, quality::QualitySettings};

    fn quality(classes: &[&str]) -> ModelQuality {
        let mut q = ModelQuality::new(1, &QualitySettings::default(), 0);
        q.declare(&Declaration {
            task: pb::TaskType::MulticlassClassification,
            class_names: classes.iter().map(|c| c.to_string()).collect(),
            positive_class: None,
            numeric_features: Vec::new(),
            categorical_features: Vec::new(),
            gen_ai_provider: None,
            allow_undeclared_classes: true,
        });
        q
    }

    #[test]
    fn a_class_travels_by_name_between_sidecars_whose_slots_differ() {
        let mut writer = quality(&["a", "b", "c"]);
        // The reader met "zebra" first: its slots are shifted.
        let mut reader = quality(&[]);
        let _ = reader.classes.slot("zebra");
        let slot = writer.classes.slot("c");
        for scores in [
            Scores::None,
            Scores::Positive(0.25),
            Scores::Two([0.1, 0.9]),
            Scores::Probabilities(vec![0.2, 0.3, 0.5].into_boxed_slice()),
        ] {
            let sent = Prediction::Class {
                slot,
                scores: scores.clone(),
            };
            let bytes = writer.encode_shared(&sent, 123);
            let (got, at) = reader.decode_shared(&bytes).expect("decodes");
            assert_eq!(at, 123);
            let Prediction::Class {
                slot: got_slot,
                scores: got_scores,
            } = got
            else {
                panic!("a class")
            };
            assert_eq!(reader.classes.names()[got_slot as usize], "c");
            assert_eq!(got_scores, scores);
        }
        let bytes = writer.encode_shared(&Prediction::Generation(Default::default()), 9);
        assert_eq!(
            reader.decode_shared(&bytes),
            Some((Prediction::Generation(Default::default()), 9))
        );
        let bytes = writer.encode_shared(&Prediction::Value(-2.5), 7);
        assert!(matches!(
            reader.decode_shared(&bytes),
            Some((Prediction::Value(v), 7)) if v == -2.5
        ));
    }

    #[test]
    fn anything_else_is_refused() {
        let mut q = quality(&["a"]);
        let good = q.encode_shared(&Prediction::Value(1.0), 1);
        for bad in [&[][..], &[2][..], &good[..good.len() - 1]] {
            assert!(q.decode_shared(bad).is_none(), "{bad:?}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(q.decode_shared(&long).is_none());
    }
}
