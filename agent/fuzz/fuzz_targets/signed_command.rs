//! Checking a command from the wire never panics and never accepts what the pinned key did not
//! sign: any bytes as a SignedCommand, verified against a fixed key.
#![no_main]

use prost::Message;
use vakt_proto::pb;

/// An Ed25519 public key the fuzzer does not hold the private half of.
const PINNED: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(signed) = pb::SignedCommand::decode(data) else {
        return;
    };
    let verdict = vakt_agent::act::verify::verify(&signed, PINNED, "dev-1", 0);
    assert!(verdict.is_err(), "a command not signed by the pinned key was accepted");
    let _ = vakt_agent::act::verify::unverified_id(&signed);
    // A malformed pinned key is refused, not a panic.
    let key = String::from_utf8_lossy(&signed.signature);
    let _ = vakt_agent::act::verify::verify(&signed, &key, "dev-1", 0);
});
