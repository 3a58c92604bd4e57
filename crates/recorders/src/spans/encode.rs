//! OTLP protobuf for job spans, written straight from a completed job into the bytes of an
//! `ExportTraceServiceRequest`, with prost's wire primitives.
//!
//! Why not the OpenTelemetry SDK's `SpanData` and opentelemetry-otlp's conversion: per job
//! they built three `SpanData` (every attribute value cloned three times), converted each
//! to generated protobuf structs (every key and value copied again) and encoded those: about
//! 16 % of the listener's CPU in the 10,000-job burst of `make bench`, mostly malloc, free
//! and memmove (docs/benchmarks.md, CPU per job). Here a job's shared attributes are
//! encoded once and copied into each of its spans; nothing is allocated per attribute.
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and its imports;
//! the tests decode what is written here with the generated `opentelemetry-proto` types.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// `Span.flags`: sampled (W3C trace flags 0x01), and "the parent's remoteness is known"
/// (0x100) and "the parent is remote" (0x200), as the SDK's conversion sets them for a
/// span whose parent (the workflow tool's job span) is remote.
const SPAN_FLAGS: u32 = 0x01 | 0x100 | 0x200;
/// `Span.kind`: `SPAN_KIND_INTERNAL`.
const SPAN_KIND_INTERNAL: u64 = 1;
/// `Status.code`: `STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: u64 = 2;

/// `ScopeSpans.spans`: the field each encoded span is written as.
const SCOPE_SPANS_SPANS: u32 = 2;
/// `Span.attributes`, `Resource.attributes`.
const SPAN_ATTRIBUTES: u32 = 9;
const RESOURCE_ATTRIBUTES: u32 = 1;

/// An attribute value as OTLP's `AnyValue` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
}

fn field_len(len: usize) -> usize {
    // Tags below 16 take one byte.
    1 + encoded_len_varint(len as u64) + len
}

fn put_len(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_len(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

fn put_varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

fn put_fixed64(buf: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

fn put_fixed32(buf: &mut Vec<u8>, tag: u32, value: u32) {
    encode_key(tag, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
}

/// A `KeyValue` { key = 1, value = 2: `AnyValue` { string_value = 1 | int_value = 3 } } as
/// field `tag` of the enclosing message. A oneof member is written even when empty, as prost
/// does.
fn put_attribute(buf: &mut Vec<u8>, tag: u32, key: &str, value: AttrValue<'_>) {
    let value_len = match value {
        AttrValue::Str(s) => field_len(s.len()),
        // int64 is a varint of the two's-complement bits.
        AttrValue::Int(i) => 1 + encoded_len_varint(i as u64),
    };
    put_len(buf, tag, field_len(key.len()) + field_len(value_len));
    put_bytes(buf, 1, key.as_bytes());
    put_len(buf, 2, value_len);
    match value {
        AttrValue::Str(s) => put_bytes(buf, 1, s.as_bytes()),
        AttrValue::Int(i) => put_varint(buf, 3, i as u64),
    }
}

/// Appends attributes as `Span.attributes` entries.
pub(super) fn put_span_attribute(buf: &mut Vec<u8>, key: &str, value: AttrValue<'_>) {
    put_attribute(buf, SPAN_ATTRIBUTES, key, value);
}

/// What distinguishes one span of a job from the others.
pub(super) struct SpanFields<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: [u8; 8],
    pub name: &'a str,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// `Some(message)`: status error with that message; `None`: status unset.
    pub error: Option<&'a str>,
}

/// Appends one `Span` as a `ScopeSpans.spans` entry to `out`: its own fields, then the
/// already encoded `shared` attributes, then `own` attributes. `scratch` holds the span
/// while its length is not known yet (kept by the caller so it is allocated once).
pub(super) fn put_span(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    span: &SpanFields<'_>,
    shared: &[u8],
    own: impl FnOnce(&mut Vec<u8>),
) {
    scratch.clear();
    put_bytes(scratch, 1, &span.trace_id);
    put_bytes(scratch, 2, &span.span_id);
    put_bytes(scratch, 4, &span.parent_span_id);
    put_bytes(scratch, 5, span.name.as_bytes());
    put_varint(scratch, 6, SPAN_KIND_INTERNAL);
    put_fixed64(scratch, 7, span.start_unix_nanos);
    put_fixed64(scratch, 8, span.end_unix_nanos);
    scratch.extend_from_slice(shared);
    own(scratch);
    // Status { message = 2, code = 3 }: always present, empty when unset.
    match span.error {
        None => put_len(scratch, 15, 0),
        Some(message) => {
            let len = if message.is_empty() {
                0
            } else {
                field_len(message.len())
            } + 1
                + encoded_len_varint(STATUS_CODE_ERROR);
            put_len(scratch, 15, len);
            if !message.is_empty() {
                put_bytes(scratch, 2, message.as_bytes());
            }
            put_varint(scratch, 3, STATUS_CODE_ERROR);
        }
    }
    put_fixed32(scratch, 16, SPAN_FLAGS);
    put_bytes(out, SCOPE_SPANS_SPANS, scratch);
}

/// A `Resource` message with string attributes.
pub(super) fn resource<'a>(attributes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut buf = Vec::new();
    for (key, value) in attributes {
        put_attribute(&mut buf, RESOURCE_ATTRIBUTES, key, AttrValue::Str(value));
    }
    buf
}

/// An `InstrumentationScope` message { name = 1, version = 2 }.
pub(super) fn scope(name: &str, version: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    put_bytes(&mut buf, 1, name.as_bytes());
    put_bytes(&mut buf, 2, version.as_bytes());
    buf
}

/// An `ExportTraceServiceRequest` with one `ResourceSpans` of one `ScopeSpans` holding
/// `spans` (entries written by [`put_span`]).
pub(super) fn export_request(resource: &[u8], scope: &[u8], spans: &[u8]) -> Vec<u8> {
    let scope_spans_len = field_len(scope.len()) + spans.len();
    let resource_spans_len = field_len(resource.len()) + field_len(scope_spans_len);
    let mut out = Vec::with_capacity(field_len(resource_spans_len));
    put_len(&mut out, 1, resource_spans_len);
    put_bytes(&mut out, 1, resource);
    put_len(&mut out, 2, scope_spans_len);
    put_bytes(&mut out, 1, scope);
    out.extend_from_slice(spans);
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message as _;

    use super::*;

    #[test]
    fn a_request_decodes_with_the_generated_types() {
        let mut spans = Vec::new();
        let mut scratch = Vec::new();
        let mut shared = Vec::new();
        put_span_attribute(&mut shared, "s", AttrValue::Str(""));
        put_span_attribute(&mut shared, "n", AttrValue::Int(-3));
        let long = "x".repeat(300);
        for (name, error) in [("a", None), ("b", Some("")), ("c", Some(long.as_str()))] {
            let fields = SpanFields {
                trace_id: [7; 16],
                span_id: [1; 8],
                parent_span_id: [2; 8],
                name,
                start_unix_nanos: 1,
                end_unix_nanos: u64::MAX,
                error,
            };
            put_span(&mut spans, &mut scratch, &fields, &shared, |buf| {
                put_span_attribute(buf, "own", AttrValue::Int(i64::MAX));
            });
        }
        let request = export_request(
            &resource([("service.name", "svc"), ("k", &long)]),
            &scope("scope", "1.0"),
            &spans,
        );
        let decoded = ExportTraceServiceRequest::decode(request.as_slice()).unwrap();
        let rs = &decoded.resource_spans[0];
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(attrs[0].key, "service.name");
        assert_eq!(
            attrs[1].value.as_ref().unwrap().value,
            Some(Value::StringValue(long.clone()))
        );
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("scope", "1.0")
        );
        assert_eq!(ss.spans.len(), 3);
        for span in &ss.spans {
            assert_eq!(span.trace_id, [7; 16]);
            assert_eq!(span.span_id, [1; 8]);
            assert_eq!(span.parent_span_id, [2; 8]);
            assert_eq!(span.kind, 1);
            assert_eq!(span.flags, 0x301);
            assert_eq!(
                (span.start_time_unix_nano, span.end_time_unix_nano),
                (1, u64::MAX)
            );
            let values: Vec<_> = span
                .attributes
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap()))
                .collect();
            assert_eq!(
                values,
                [
                    ("s", Value::StringValue(String::new())),
                    ("n", Value::IntValue(-3)),
                    ("own", Value::IntValue(i64::MAX)),
                ]
            );
        }
        let status: Vec<_> = ss
            .spans
            .iter()
            .map(|s| {
                let st = s.status.clone().unwrap();
                (s.name.as_str().to_owned(), st.code, st.message)
            })
            .collect();
        assert_eq!(
            status,
            [
                ("a".to_owned(), 0, String::new()),
                ("b".to_owned(), 2, String::new()),
                ("c".to_owned(), 2, long),
            ]
        );
    }
}
