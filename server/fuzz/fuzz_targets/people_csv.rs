//! People CSV parsing never panics on any bytes, and returns people or errors, never neither.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match vakt_server::people::parse(data) {
        Ok(people) => assert!(!people.is_empty()),
        Err(errors) => assert!(!errors.is_empty()),
    }
});
