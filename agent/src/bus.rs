//! Which D-Bus system bus to talk to: the config's `system_bus`, else the standard
//! `DBUS_SYSTEM_BUS_ADDRESS`, else the well-known socket. Taken as arguments, so tests pass a
//! private bus without touching the process environment. Shared by the roaming collector
//! (ModemManager) and the lock (logind).

/// The system bus address the D-Bus specification gives when nothing else is configured.
pub const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";

/// A D-Bus address such as `unix:path=/run/dbus/system_bus_socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusAddress(String);

impl BusAddress {
    pub fn new(address: impl Into<String>) -> Self {
        Self(address.into())
    }

    /// The system bus to use: the agent config's `system_bus` if set, else the value of
    /// `DBUS_SYSTEM_BUS_ADDRESS` (passed in by the caller, so tests never touch the process
    /// environment), else [`DEFAULT_SYSTEM_BUS`]. Blank values count as unset.
    pub fn resolve(config: Option<&str>, env: Option<&str>) -> Self {
        fn pick(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|s| !s.is_empty())
        }
        Self::new(pick(config).or(pick(env)).unwrap_or(DEFAULT_SYSTEM_BUS))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Connects to the bus.
    pub async fn connect(&self) -> Result<zbus::Connection, zbus::Error> {
        zbus::connection::Builder::address(self.as_str())?
            .build()
            .await
    }
}

impl std::fmt::Display for BusAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_wins_then_env_then_default() {
        let r = |c, e| BusAddress::resolve(c, e).as_str().to_string();
        assert_eq!(
            r(Some("unix:path=/a"), Some("unix:path=/b")),
            "unix:path=/a"
        );
        assert_eq!(r(None, Some("unix:path=/b")), "unix:path=/b");
        assert_eq!(r(Some(" "), None), DEFAULT_SYSTEM_BUS);
    }
}
