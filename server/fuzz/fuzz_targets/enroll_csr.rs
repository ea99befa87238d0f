//! The certificate signing request of an enrollment is the one piece of X.509 a stranger sends
//! the server (with a valid token, but that is all): any bytes give a certificate or an error,
//! never a panic. The CA is made once per fuzzing process in a directory of its own.
#![no_main]

use std::sync::OnceLock;

fn pki() -> &'static vakt_server::pki::Pki {
    static PKI: OnceLock<vakt_server::pki::Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vakt-fuzz-csr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz CA directory");
        vakt_server::pki::Pki::load_or_create(&dir, &[]).expect("fuzz CA")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    if let Ok(issued) = pki().issue_device_cert(data, "fuzz-device", now) {
        assert!(issued.pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
});
