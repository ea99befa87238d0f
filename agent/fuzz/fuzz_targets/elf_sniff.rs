//! ELF/AppImage/script sniffing and AppImage file-name parsing never panic, and a dpkg list
//! streamed (as the agent reads it) owns exactly what the same list read whole owns.
#![no_main]

use vakt_agent::collect::software::unmanaged;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = unmanaged::sniff(data);
    let _ = unmanaged::appimage_name_version(&String::from_utf8_lossy(data));
    let mut owners = unmanaged::Ownership::default();
    let text = String::from_utf8_lossy(data);
    owners.add_dpkg_list(&text);
    let _ = owners.owns(&text);
    let mut streamed = unmanaged::Ownership::default();
    // A small buffer, so lines cross refills; reading from a slice cannot fail.
    let read = streamed.add_dpkg_list_from(std::io::BufReader::with_capacity(7, data));
    assert!(read.is_ok());
    assert_eq!(streamed, owners);
});
