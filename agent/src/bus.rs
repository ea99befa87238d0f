//! Which D-Bus system bus to talk to: the config's `system_bus`, else the standard
//! `DBUS_SYSTEM_BUS_ADDRESS`, else the well-known socket. Taken as arguments, so tests pass a
//! private bus without touching the process environment.

/// The well-known system bus socket.
pub const DEFAULT_SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// The system bus address to use, from the config value and the environment value.
pub fn system_bus_address(config: Option<&str>, env: Option<&str>) -> String {
    config
        .filter(|s| !s.trim().is_empty())
        .or(env.filter(|s| !s.trim().is_empty()))
        .unwrap_or(DEFAULT_SYSTEM_BUS)
        .to_string()
}

/// Connects to the bus at `address`.
pub async fn connect(address: &str) -> Result<zbus::Connection, zbus::Error> {
    zbus::connection::Builder::address(address)?.build().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_wins_then_env_then_default() {
        assert_eq!(
            system_bus_address(Some("unix:path=/a"), Some("unix:path=/b")),
            "unix:path=/a"
        );
        assert_eq!(
            system_bus_address(None, Some("unix:path=/b")),
            "unix:path=/b"
        );
        assert_eq!(system_bus_address(Some(" "), None), DEFAULT_SYSTEM_BUS);
    }
}
