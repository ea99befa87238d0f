//! The prefs.js reader never panics on any bytes, and never keeps more prefs than the input
//! can hold (the shortest, `pref("",0);`, takes 11 bytes). The account manager's view built
//! from them keeps at most `MAX_KEYS` accounts, identities per account and outgoing servers,
//! whatever the lists say (a hostile prefs.js repeating keys made accounts × identities).
#![no_main]

use vakt_agent::collect::mail::thunderbird::{MAX_KEYS, config_from_prefs};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let parsed = vakt_agent::collect::mail::prefs::parse_prefs(data);
    assert!(parsed.value.len() * 11 <= data.len());
    let config = config_from_prefs(&parsed.value);
    assert!(config.accounts.len() <= MAX_KEYS);
    assert!(config.smtp.len() <= MAX_KEYS);
    for a in &config.accounts {
        assert!(a.identities.len() <= MAX_KEYS);
    }
});
