//! ELF/AppImage/script sniffing and AppImage file-name parsing never panic.
#![no_main]

use vakt_agent::collect::software::unmanaged;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = unmanaged::sniff(data);
    let _ = unmanaged::appimage_name_version(&String::from_utf8_lossy(data));
    let mut owners = unmanaged::Ownership::default();
    let text = String::from_utf8_lossy(data);
    owners.add_dpkg_list(&text);
    let _ = owners.owns(&text);
});
