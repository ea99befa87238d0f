//! What the server does with a report from the wire never panics: protobuf decoding of a
//! ReportRequest, each section's kind, its conversion to the domain model, and its hash.
#![no_main]

use prost::Message;
use vakt_proto::pb;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::ReportRequest::decode(data) else {
        return;
    };
    for s in &req.sections {
        let _ = vakt_proto::convert::section_kind(s.kind);
        let _ = vakt_proto::convert::sections_to_report(std::slice::from_ref(s));
        let _ = vakt_proto::hash::section_hash(s);
    }
    let _ = vakt_proto::convert::sections_to_report(&req.sections);
});
