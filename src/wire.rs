//! `inferscope.v1.RecordBatch` and `LabelBatch`, decoded item by item: one record or label that is
//! not valid protobuf (a string that is not UTF-8, a truncated field) is set aside and rejected
//! alone instead of failing the whole batch.
//!
//! Written by hand because prost decodes a message all or nothing: its generated
//! `RecordBatch::merge_field` returns the first error of any record, and it has no setting to
//! read `string` fields as bytes. `build.rs` maps the proto types here (`extern_path`), so the
//! generated stubs, the client and the server all use these types; the wire format is the one
//! `proto/inferscope/v1/ingest.proto` gives, and `tests` below check it against a message
//! generated from that file.

use crate::pb;
use prost::{
    bytes::{Buf, BufMut},
    encoding::{self, decode_key, decode_varint, DecodeContext, WireType},
    DecodeError, Message,
};

/// A batch of inference records (proto: `RecordBatch`).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct RecordBatch {
    /// Chosen by the client; echoed in the ack.
    pub sequence: u64,
    /// Model and version for every record that does not name its own.
    pub model: String,
    pub version: String,
    /// Declarations for the models in this batch.
    pub declarations: Vec<pb::ModelDeclaration>,
    pub records: Vec<pb::InferenceRecord>,
    /// Records the client dropped since its previous batch (proto field 6).
    pub client_dropped_records: u64,
    /// Records whose bytes did not decode: their index and why. Their place in `records` holds
    /// an empty record, so that indices keep matching the client's. Set by decoding only; never
    /// encoded.
    pub malformed: Vec<(u32, String)>,
    /// The bytes it was decoded from. Set by decoding only; never encoded.
    pub decoded_len: DecodedLen,
}

/// How many bytes a batch was decoded from (0: built in memory), so that ingest's memory budget
/// does not walk every record to compute the encoded size it already had (`encoded_len` cost
/// about 300 instructions a 32-feature record, BENCHMARKS.md "Delayed labels (issue 15)"). Not
/// part of the batch's value: batches that differ only here are equal.
#[derive(Clone, Copy, Default, Debug)]
pub struct DecodedLen(pub usize);

impl PartialEq for DecodedLen {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl RecordBatch {
    /// Its encoded size: the bytes it was decoded from, or computed if built in memory.
    pub fn wire_len(&self) -> usize {
        match self.decoded_len.0 {
            0 => self.encoded_len(),
            n => n,
        }
    }
}

impl LabelBatch {
    /// Its encoded size: the bytes it was decoded from, or computed if built in memory.
    pub fn wire_len(&self) -> usize {
        match self.decoded_len.0 {
            0 => self.encoded_len(),
            n => n,
        }
    }
}

/// Adds a top-level field's bytes, its key included, to `decoded`: `before` is what `buf` held
/// after the key.
fn count_field(decoded: &mut DecodedLen, tag: u32, before: usize, buf: &impl Buf) {
    decoded.0 += encoding::key_len(tag) + (before - buf.remaining());
}

/// A decode error of our own: prost's only constructor for one is deprecated (it meant it for
/// generated code), and these two errors are the ones its own `merge_loop` returns.
#[allow(deprecated)]
fn error(what: &'static str) -> DecodeError {
    DecodeError::new(what)
}

/// Decodes the item at the head of `buf` (a length-delimited repeated field) into `items`. An
/// item whose content fails is replaced by an empty one and noted in `malformed` with its index;
/// an error is returned only when the item's framing itself is broken (its length runs past the
/// batch), since then nothing after it can be found.
fn merge_item<M: Item>(
    items: &mut Vec<M>,
    malformed: &mut Vec<(u32, String)>,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let len = decode_varint(buf)?;
    let remaining = buf.remaining();
    if len > remaining as u64 {
        return Err(error("buffer underflow"));
    }
    if items.capacity() == 0 {
        // The first item: room for as many more of its size as the rest of the batch could
        // hold, instead of growing the vector (and copying every item so far) 10 times for a
        // batch of 1000. No more than decoding that many items would take anyway.
        let framed = len as usize + encoding::key_len(1) + encoding::encoded_len_varint(len);
        items.reserve((remaining / framed.max(1) + 1).min(MAX_RESERVED_ITEMS));
    }
    let end = remaining - len as usize;
    let mut item = M::default();
    let mut failed = None;
    while buf.remaining() > end {
        let field = decode_key(buf).and_then(|(tag, wire_type)| {
            item.reserve_field(tag, wire_type, buf);
            item.merge_field(tag, wire_type, buf, ctx.clone())
        });
        if let Err(e) = field {
            failed = Some(e);
            break;
        }
    }
    if buf.remaining() < end {
        return Err(error("an item runs past its length"));
    }
    buf.advance(buf.remaining() - end);
    match failed {
        None => items.push(item),
        Some(e) => {
            malformed.push((items.len() as u32, e.to_string()));
            items.push(M::default());
        }
    }
    Ok(())
}

/// Most items [`merge_item`] makes room for at once, whatever the batch's size.
const MAX_RESERVED_ITEMS: usize = 4096;

/// An item of a batch: a message, and room made for a repeated field before prost fills it.
pub trait Item: Message + Default {
    /// Called with each field's key before prost merges it, `buf` at the field's value.
    #[inline]
    fn reserve_field(&mut self, _tag: u32, _wire_type: WireType, _buf: &impl Buf) {}
}

impl Item for pb::GroundTruth {}

impl Item for pb::InferenceRecord {
    /// `numeric_features` (field 7), packed: prost pushes value by value, growing the vector 6
    /// times for 32 features (`prost::encoding::double::merge_repeated`); its length says how
    /// many values follow, 8 bytes each.
    #[inline]
    fn reserve_field(&mut self, tag: u32, wire_type: WireType, buf: &impl Buf) {
        if tag != 7 || wire_type != WireType::LengthDelimited || !self.numeric_features.is_empty() {
            return;
        }
        let mut peek = buf.chunk();
        if let Ok(len) = decode_varint(&mut peek) {
            // Bounded by the bytes there are: a length that lies fails in prost's merge.
            let len = (len as usize).min(buf.remaining());
            self.numeric_features.reserve_exact(len / 8);
        }
    }
}

/// `e` with the message and field it occurred in.
fn named(mut e: DecodeError, message: &'static str, field: &'static str) -> DecodeError {
    e.push(message, field);
    e
}

/// Fields 1–3 of both batches: sequence, model, version.
fn encode_header(sequence: u64, model: &str, version: &str, buf: &mut impl BufMut) {
    if sequence != 0 {
        encoding::uint64::encode(1, &sequence, buf);
    }
    for (tag, text) in [(2, model), (3, version)] {
        if !text.is_empty() {
            encoding::encode_key(tag, WireType::LengthDelimited, buf);
            encoding::encode_varint(text.len() as u64, buf);
            buf.put_slice(text.as_bytes());
        }
    }
}

fn header_len(sequence: u64, model: &str, version: &str) -> usize {
    let string = |tag, s: &str| match s.len() {
        0 => 0,
        n => encoding::key_len(tag) + encoding::encoded_len_varint(n as u64) + n,
    };
    let sequence = match sequence {
        0 => 0,
        n => encoding::uint64::encoded_len(1, &n),
    };
    sequence + string(2, model) + string(3, version)
}

/// Merges field 1–3 of `message`; `None` for any other tag.
#[allow(clippy::too_many_arguments)]
fn merge_header(
    message: &'static str,
    tag: u32,
    wire_type: WireType,
    sequence: &mut u64,
    model: &mut String,
    version: &mut String,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Option<Result<(), DecodeError>> {
    Some(match tag {
        1 => encoding::uint64::merge(wire_type, sequence, buf, ctx)
            .map_err(|e| named(e, message, "sequence")),
        2 => encoding::string::merge(wire_type, model, buf, ctx)
            .map_err(|e| named(e, message, "model")),
        3 => encoding::string::merge(wire_type, version, buf, ctx)
            .map_err(|e| named(e, message, "version")),
        _ => return None,
    })
}

/// Merges one item of a repeated field decoded item by item ([`merge_item`]).
fn merge_items<M: Item>(
    (message, field): (&'static str, &'static str),
    wire_type: WireType,
    items: &mut Vec<M>,
    malformed: &mut Vec<(u32, String)>,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)
        .and_then(|()| merge_item(items, malformed, buf, ctx))
        .map_err(|e| named(e, message, field))
}

impl Message for RecordBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_header(self.sequence, &self.model, &self.version, buf);
        for declaration in &self.declarations {
            encoding::message::encode(4, declaration, buf);
        }
        for record in &self.records {
            encoding::message::encode(5, record, buf);
        }
        if self.client_dropped_records != 0 {
            encoding::uint64::encode(6, &self.client_dropped_records, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let before = buf.remaining();
        let merge = |batch: &mut Self, buf: &mut _| -> Result<(), DecodeError> {
            let (sequence, model, version) =
                (&mut batch.sequence, &mut batch.model, &mut batch.version);
            if let Some(merged) = merge_header(
                "RecordBatch",
                tag,
                wire_type,
                sequence,
                model,
                version,
                buf,
                ctx.clone(),
            ) {
                return merged;
            }
            match tag {
                4 => {
                    encoding::message::merge_repeated(wire_type, &mut batch.declarations, buf, ctx)
                        .map_err(|e| named(e, "RecordBatch", "declarations"))
                }
                5 => merge_items(
                    ("RecordBatch", "records"),
                    wire_type,
                    &mut batch.records,
                    &mut batch.malformed,
                    buf,
                    ctx,
                ),
                6 => {
                    encoding::uint64::merge(wire_type, &mut batch.client_dropped_records, buf, ctx)
                        .map_err(|e| named(e, "RecordBatch", "client_dropped_records"))
                }
                _ => encoding::skip_field(wire_type, tag, buf, ctx),
            }
        };
        let merged = merge(self, buf);
        count_field(&mut self.decoded_len, tag, before, buf);
        merged
    }

    fn encoded_len(&self) -> usize {
        let dropped = match self.client_dropped_records {
            0 => 0,
            n => encoding::uint64::encoded_len(6, &n),
        };
        header_len(self.sequence, &self.model, &self.version)
            + encoding::message::encoded_len_repeated(4, &self.declarations)
            + encoding::message::encoded_len_repeated(5, &self.records)
            + dropped
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A batch of delayed labels (proto: `LabelBatch`).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct LabelBatch {
    pub sequence: u64,
    /// Model and version for every label that does not name its own.
    pub model: String,
    pub version: String,
    pub labels: Vec<pb::GroundTruth>,
    /// Labels whose bytes did not decode: their index and why (an empty label holds the place).
    /// Set by decoding only; never encoded.
    pub malformed: Vec<(u32, String)>,
    /// The bytes it was decoded from. Set by decoding only; never encoded.
    pub decoded_len: DecodedLen,
}

impl Message for LabelBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_header(self.sequence, &self.model, &self.version, buf);
        for label in &self.labels {
            encoding::message::encode(4, label, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let before = buf.remaining();
        let merge = |batch: &mut Self, buf: &mut _| -> Result<(), DecodeError> {
            let (sequence, model, version) =
                (&mut batch.sequence, &mut batch.model, &mut batch.version);
            if let Some(merged) = merge_header(
                "LabelBatch",
                tag,
                wire_type,
                sequence,
                model,
                version,
                buf,
                ctx.clone(),
            ) {
                return merged;
            }
            match tag {
                4 => merge_items(
                    ("LabelBatch", "labels"),
                    wire_type,
                    &mut batch.labels,
                    &mut batch.malformed,
                    buf,
                    ctx,
                ),
                _ => encoding::skip_field(wire_type, tag, buf, ctx),
            }
        };
        let merged = merge(self, buf);
        count_field(&mut self.decoded_len, tag, before, buf);
        merged
    }

    fn encoded_len(&self) -> usize {
        header_len(self.sequence, &self.model, &self.version)
            + encoding::message::encoded_len_repeated(4, &self.labels)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proto's own `RecordBatch` (from the same file, through prost's generator) is the
    /// oracle for the wire format.
    #[allow(dead_code, clippy::all)]
    mod generated {
        include!(concat!(env!("OUT_DIR"), "/oracle/inferscope.v1.rs"));
    }

    fn sample() -> RecordBatch {
        let mut batch = crate::demo::load_test_batch(3, 5, 4);
        batch.model = "m".into();
        batch.version = "2".into();
        batch.declarations = vec![pb::ModelDeclaration {
            model: "m".into(),
            version: "2".into(),
            class_names: vec!["a".into(), "b".into()],
            ..Default::default()
        }];
        batch
    }

    #[test]
    fn the_wire_format_is_the_protos() {
        let mut batch = sample();
        batch.client_dropped_records = 300;
        let bytes = batch.encode_to_vec();
        assert_eq!(bytes.len(), batch.encoded_len());
        let oracle = generated::RecordBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(oracle.sequence, batch.sequence);
        assert_eq!((oracle.model.as_str(), oracle.version.as_str()), ("m", "2"));
        assert_eq!(oracle.records.len(), batch.records.len());
        assert_eq!(oracle.declarations.len(), 1);
        assert_eq!(oracle.client_dropped_records, 300);
        // And back: what the generated type writes, this type reads the same.
        let again = RecordBatch::decode(oracle.encode_to_vec().as_slice()).unwrap();
        assert_eq!(again, batch);
        assert!(again.malformed.is_empty());
        // The memory budget's size: counted while decoding, computed for a batch built here.
        assert_eq!(again.decoded_len.0, bytes.len());
        assert_eq!(
            (again.wire_len(), batch.wire_len()),
            (bytes.len(), bytes.len())
        );
    }

    #[test]
    fn numeric_features_read_as_the_protos_packed_unpacked_or_split() {
        let record = |features: &[f64]| pb::InferenceRecord {
            request_id: "r".into(),
            numeric_features: features.to_vec(),
            ..Default::default()
        };
        let mut bytes = Vec::new();
        // Record 1: two packed runs of field 7 (they concatenate); record 2: unpacked values.
        let mut first = record(&[1.0, 2.0]).encode_to_vec();
        encoding::double::encode_packed(7, &[3.0, f64::NAN], &mut first);
        let mut second = record(&[]).encode_to_vec();
        for v in [4.0, -0.0] {
            encoding::double::encode(7, &v, &mut second);
        }
        for item in [&first, &second] {
            encoding::encode_key(5, WireType::LengthDelimited, &mut bytes);
            encoding::encode_varint(item.len() as u64, &mut bytes);
            bytes.extend_from_slice(item);
        }
        let got = RecordBatch::decode(bytes.as_slice()).unwrap();
        let oracle = generated::RecordBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(got.records.len(), 2);
        for (got, oracle) in got.records.iter().zip(&oracle.records) {
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.numeric_features), bits(&oracle.numeric_features));
        }
        assert_eq!(got.records[1].numeric_features, [4.0, -0.0]);
        // A packed length past the record's end fails the record alone.
        let mut bad = record(&[]).encode_to_vec();
        encoding::encode_key(7, WireType::LengthDelimited, &mut bad);
        encoding::encode_varint(1 << 40, &mut bad);
        let mut bytes = Vec::new();
        encoding::message::encode(5, &record(&[5.0]), &mut bytes);
        encoding::encode_key(5, WireType::LengthDelimited, &mut bytes);
        encoding::encode_varint(bad.len() as u64, &mut bytes);
        bytes.extend_from_slice(&bad);
        let got = RecordBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(got.records.len(), 2);
        assert_eq!(got.malformed.len(), 1);
        assert_eq!(got.malformed[0].0, 1);
    }

    #[test]
    fn a_record_with_invalid_utf8_is_set_aside_alone() {
        let (sent, bytes) = crate::demo::encoded_with_invalid_utf8(3, 5, 2);
        // The proto's generated type loses the whole batch.
        assert!(generated::RecordBatch::decode(bytes.as_slice()).is_err());
        let got = RecordBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(got.records.len(), sent.records.len());
        assert_eq!(got.malformed.len(), 1);
        assert_eq!(got.malformed[0].0, 2);
        assert!(
            got.malformed[0].1.contains("request_id"),
            "{:?}",
            got.malformed
        );
        assert_eq!(got.records[2], pb::InferenceRecord::default());
        for i in [0, 1, 3, 4] {
            assert_eq!(got.records[i], sent.records[i]);
        }
        assert_eq!(got.sequence, sent.sequence);
    }

    #[test]
    fn a_label_with_invalid_utf8_is_set_aside_alone() {
        let batch = LabelBatch {
            sequence: 9,
            model: "m".into(),
            version: "1".into(),
            labels: ["a", "\u{1F6A9}\u{1F6A9}\u{1F6A9}", "c"]
                .iter()
                .map(|id| pb::GroundTruth {
                    request_id: (*id).into(),
                    label: Some(pb::Label {
                        value: Some(pb::label::Value::ClassIndex(1)),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut bytes = batch.encode_to_vec();
        assert_eq!(bytes.len(), batch.encoded_len());
        let oracle = generated::LabelBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!((oracle.sequence, oracle.labels.len()), (9, 3));
        let marker = "\u{1F6A9}".as_bytes();
        let at = bytes.windows(4).position(|w| w == marker).unwrap();
        bytes[at] = 0xff;
        assert!(generated::LabelBatch::decode(bytes.as_slice()).is_err());
        let got = LabelBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            (got.wire_len(), batch.wire_len()),
            (bytes.len(), bytes.len())
        );
        assert_eq!(got.labels.len(), 3);
        assert_eq!(got.malformed.len(), 1);
        assert_eq!(got.malformed[0].0, 1);
        assert_eq!(got.labels[0], batch.labels[0]);
        assert_eq!(got.labels[2], batch.labels[2]);
    }

    #[test]
    fn a_record_whose_length_runs_past_the_batch_fails_the_batch() {
        let mut bytes = sample().encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        assert!(RecordBatch::decode(bytes.as_slice()).is_err());
    }
}
