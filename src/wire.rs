//! `inferscope.v1.RecordBatch`, decoded record by record: one record that is not valid protobuf
//! (a string that is not UTF-8, a truncated field) is set aside and rejected alone instead of
//! failing the whole batch.
//!
//! Written by hand because prost decodes a message all or nothing: its generated
//! `RecordBatch::merge_field` returns the first error of any record, and it has no setting to
//! read `string` fields as bytes. `build.rs` maps the proto type here (`extern_path`), so the
//! generated stubs, the client and the server all use this type; the wire format is the one
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
    /// Records whose bytes did not decode: their index and why. Their place in `records` holds
    /// an empty record, so that indices keep matching the client's. Set by decoding only; never
    /// encoded.
    pub malformed: Vec<(u32, String)>,
}

/// A decode error of our own: prost's only constructor for one is deprecated (it meant it for
/// generated code), and these two errors are the ones its own `merge_loop` returns.
#[allow(deprecated)]
fn error(what: &'static str) -> DecodeError {
    DecodeError::new(what)
}

impl RecordBatch {
    /// Decodes the record at the head of `buf` (a length-delimited field 5). A record whose
    /// content fails is replaced by an empty one and noted; an error is returned only when the
    /// record's framing itself is broken (its length runs past the batch), since then nothing
    /// after it can be found.
    fn merge_record(&mut self, buf: &mut impl Buf, ctx: DecodeContext) -> Result<(), DecodeError> {
        let len = decode_varint(buf)?;
        let remaining = buf.remaining();
        if len > remaining as u64 {
            return Err(error("buffer underflow"));
        }
        let end = remaining - len as usize;
        let mut record = pb::InferenceRecord::default();
        let mut failed = None;
        while buf.remaining() > end {
            let field = decode_key(buf)
                .and_then(|(tag, wire_type)| record.merge_field(tag, wire_type, buf, ctx.clone()));
            if let Err(e) = field {
                failed = Some(e);
                break;
            }
        }
        if buf.remaining() < end {
            return Err(error("a record runs past its length"));
        }
        buf.advance(buf.remaining() - end);
        match failed {
            None => self.records.push(record),
            Some(e) => {
                self.malformed
                    .push((self.records.len() as u32, e.to_string()));
                self.records.push(pb::InferenceRecord::default());
            }
        }
        Ok(())
    }
}

impl Message for RecordBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.sequence != 0 {
            encoding::uint64::encode(1, &self.sequence, buf);
        }
        if !self.model.is_empty() {
            encoding::string::encode(2, &self.model, buf);
        }
        if !self.version.is_empty() {
            encoding::string::encode(3, &self.version, buf);
        }
        for declaration in &self.declarations {
            encoding::message::encode(4, declaration, buf);
        }
        for record in &self.records {
            encoding::message::encode(5, record, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let named = |mut e: DecodeError, field: &'static str| {
            e.push("RecordBatch", field);
            e
        };
        match tag {
            1 => encoding::uint64::merge(wire_type, &mut self.sequence, buf, ctx)
                .map_err(|e| named(e, "sequence")),
            2 => encoding::string::merge(wire_type, &mut self.model, buf, ctx)
                .map_err(|e| named(e, "model")),
            3 => encoding::string::merge(wire_type, &mut self.version, buf, ctx)
                .map_err(|e| named(e, "version")),
            4 => encoding::message::merge_repeated(wire_type, &mut self.declarations, buf, ctx)
                .map_err(|e| named(e, "declarations")),
            5 => {
                encoding::check_wire_type(WireType::LengthDelimited, wire_type)
                    .map_err(|e| named(e, "records"))?;
                self.merge_record(buf, ctx).map_err(|e| named(e, "records"))
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        (if self.sequence != 0 {
            encoding::uint64::encoded_len(1, &self.sequence)
        } else {
            0
        }) + (if self.model.is_empty() {
            0
        } else {
            encoding::string::encoded_len(2, &self.model)
        }) + (if self.version.is_empty() {
            0
        } else {
            encoding::string::encoded_len(3, &self.version)
        }) + encoding::message::encoded_len_repeated(4, &self.declarations)
            + encoding::message::encoded_len_repeated(5, &self.records)
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
        let batch = sample();
        let bytes = batch.encode_to_vec();
        assert_eq!(bytes.len(), batch.encoded_len());
        let oracle = generated::RecordBatch::decode(bytes.as_slice()).unwrap();
        assert_eq!(oracle.sequence, batch.sequence);
        assert_eq!((oracle.model.as_str(), oracle.version.as_str()), ("m", "2"));
        assert_eq!(oracle.records.len(), batch.records.len());
        assert_eq!(oracle.declarations.len(), 1);
        // And back: what the generated type writes, this type reads the same.
        let again = RecordBatch::decode(oracle.encode_to_vec().as_slice()).unwrap();
        assert_eq!(again, batch);
        assert!(again.malformed.is_empty());
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
    fn a_record_whose_length_runs_past_the_batch_fails_the_batch() {
        let mut bytes = sample().encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        assert!(RecordBatch::decode(bytes.as_slice()).is_err());
    }
}
