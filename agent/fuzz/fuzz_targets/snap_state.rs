//! snapd state.json and snap.yaml reading never panic.
#![no_main]

use vakt_agent::collect::software::snap;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(snaps) = snap::parse_state(data) {
        for s in &snaps {
            let _ = snap::to_package(s, None);
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = snap::parse_snap_yaml_version(&text);
    let _ = snap::parse_snap_file_name(&text);
});
