//! The server's config file (`/etc/vakt/server.toml`): any text parses or gives a message for a
//! person, never a panic; what parses resolves to settings or a named error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match vakt_server::config::FileConfig::parse(text) {
        Ok(cfg) => {
            let _ = vakt_server::config::Settings::resolve(
                Some(cfg),
                vakt_server::config::Flags::default(),
            );
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
