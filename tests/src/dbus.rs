//! A private D-Bus for tests: a `dbus-daemon` of its own on a socket in a temporary directory,
//! and python-dbusmock mocks of system services (ModemManager, logind, ...) on it, driven through
//! the mock's control interface (`org.freedesktop.DBus.Mock`: AddObject, AddProperty,
//! UpdateProperties, EmitSignal, GetMethodCalls, ...).
//!
//! The bus address is handed to the code under test as a value ([`PrivateBus::address`]); the
//! test process's environment is never changed. Only the mock's own process gets
//! `DBUS_SYSTEM_BUS_ADDRESS`/`DBUS_SESSION_BUS_ADDRESS`, which is how dbusmock finds its bus.
//!
//! What is needed: `dbus-daemon` on PATH, and a Python that imports `dbus`, `gi` and
//! python-dbusmock with the wanted template (0.32 or later for `modemmanager`).
//! `.ci/install-dbus.sh` installs all of it; the Python is looked for in this order:
//! `$VAKT_DBUSMOCK_PYTHON`, [`VENV_PYTHON`] (where the script puts it), `/usr/bin/python3`,
//! `python3` on PATH. When something is missing, [`Error::Unavailable`] says what; tests then
//! print `SKIP: ...` and return through [`skip_unless_dbus!`](crate::skip_unless_dbus), unless
//! `VAKT_REQUIRE_DBUS=1` is set (CI sets it), which turns a missing tool into a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zbus::zvariant::{DynamicType, OwnedValue, Value};

/// dbusmock's control interface, on every mock object.
pub const MOCK_IFACE: &str = "org.freedesktop.DBus.Mock";
/// Where `.ci/install-dbus.sh` puts a Python with dbusmock, dbus and gi.
pub const VENV_PYTHON: &str = "/opt/vakt-ci/dbusmock/bin/python3";
/// Overrides the Python that runs dbusmock.
pub const PYTHON_ENV: &str = "VAKT_DBUSMOCK_PYTHON";
/// Set to `1` to make a missing dbus-daemon or dbusmock fail the tests instead of skipping them.
pub const REQUIRE_ENV: &str = "VAKT_REQUIRE_DBUS";

/// How long a daemon or a mock may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub enum Error {
    /// A tool the test needs is not installed: skip, unless [`required`].
    Unavailable(String),
    /// The tools are there but something went wrong: fail.
    Failed(String),
}

impl Error {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unavailable(m) => write!(
                f,
                "{m} (run .ci/install-dbus.sh as root; set {REQUIRE_ENV}=1 to fail instead of skip)"
            ),
            Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

fn failed(context: impl std::fmt::Display) -> impl FnOnce(zbus::Error) -> Error {
    move |e| Error::Failed(format!("{context}: {e}"))
}

/// Whether a missing dbus-daemon or dbusmock must fail the test (`VAKT_REQUIRE_DBUS=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Unwraps a harness result; on [`Error::Unavailable`] prints `SKIP: reason` and returns from
/// the test (unless [`required`]), on any other error panics.
#[macro_export]
macro_rules! skip_unless_dbus {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) if e.is_unavailable() && !$crate::dbus::required() => {
                eprintln!("SKIP: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        }
    };
}

/// A `dbus-daemon` of the test's own. Killed when dropped.
pub struct PrivateBus {
    // Dropped (killed) before the directory holding its socket goes.
    daemon: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl PrivateBus {
    /// Starts a bus that allows everything, activates nothing, and listens on a socket in a new
    /// temporary directory.
    pub async fn start() -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Failed(format!("temp dir: {e}")))?;
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        // No <servicedir>: nothing gets activated on this bus, only what a test starts exists.
        let xml = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"#,
            socket.display()
        );
        std::fs::write(&config, xml)
            .map_err(|e| Error::Failed(format!("{}: {e}", config.display())))?;

        let log_path = dir.path().join("dbus-daemon.stderr");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::Failed(format!("{}: {e}", log_path.display())))?;
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Its complaints (it cannot raise the fd limit in a container, say) go to a file.
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::Unavailable("dbus-daemon is not installed".into())
                }
                _ => Error::Failed(format!("starting dbus-daemon: {e}")),
            })?;
        let stdout = daemon
            .stdout
            .take()
            .ok_or_else(|| Error::Failed("dbus-daemon: no stdout".into()))?;
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        let read = stdout.read_line(&mut line);
        match tokio::time::timeout(START_TIMEOUT, read).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => {
                return Err(Error::Failed(format!(
                    "dbus-daemon exited before printing its address: {}",
                    read_lossy(&log_path)
                )));
            }
            Ok(Err(e)) => return Err(Error::Failed(format!("reading dbus-daemon's address: {e}"))),
            Err(_) => {
                return Err(Error::Failed(
                    "dbus-daemon printed no address within 20 s".into(),
                ));
            }
        }
        Ok(Self {
            daemon,
            address: line.trim().to_string(),
            dir,
        })
    }

    /// The address to hand to the code under test (`unix:path=...,guid=...`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The temporary directory of this bus; mocks keep their logs here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new connection to this bus.
    pub async fn connect(&self) -> Result<zbus::Connection, Error> {
        zbus::connection::Builder::address(self.address.as_str())
            .map_err(failed("bus address"))?
            .build()
            .await
            .map_err(failed(format!("connecting to {}", self.address)))
    }

    /// Whether `name` has an owner on this bus now.
    pub async fn has_owner(&self, conn: &zbus::Connection, name: &str) -> Result<bool, Error> {
        let reply = conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "NameHasOwner",
                &(name,),
            )
            .await
            .map_err(failed("NameHasOwner"))?;
        reply
            .body()
            .deserialize()
            .map_err(failed("NameHasOwner reply"))
    }

    /// The daemon's process id, for tests that need to kill the bus itself.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.id()
    }
}

/// What the probe learnt about a template: the name it claims and its main object.
#[derive(Debug, Clone, serde::Deserialize)]
struct TemplateInfo {
    version: String,
    bus_name: String,
    main_path: String,
}

/// Finds a Python that imports dbus, gi and dbusmock with `template`, and what the template
/// claims. Successful interpreters are remembered.
fn probe(template: &str) -> Result<(PathBuf, TemplateInfo), Error> {
    static FOUND: Mutex<Option<PathBuf>> = Mutex::new(None);
    const SCRIPT: &str = r#"
import json, sys
import dbus, gi  # the mock needs both
import dbusmock, dbusmock.mockobject as m
mod = m.load_module(sys.argv[1])
print(json.dumps({"version": dbusmock.__version__, "bus_name": mod.BUS_NAME, "main_path": mod.MAIN_OBJ}))
"#;
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = FOUND.lock().map(|g| g.clone())
        && let Some(p) = p
    {
        candidates.push(p);
    }
    if let Ok(p) = std::env::var(PYTHON_ENV) {
        candidates.push(p.into());
    }
    candidates.extend([VENV_PYTHON, "/usr/bin/python3", "python3"].map(PathBuf::from));

    let mut tried = Vec::new();
    for python in candidates {
        let out = std::process::Command::new(&python)
            .args(["-c", SCRIPT, template])
            .stdin(Stdio::null())
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                tried.push(format!("{}: {e}", python.display()));
                continue;
            }
        };
        if out.status.success()
            && let Ok(info) = serde_json::from_slice::<TemplateInfo>(&out.stdout)
        {
            if let Ok(mut g) = FOUND.lock() {
                *g = Some(python.clone());
            }
            return Ok((python, info));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("failed").trim().to_string();
        tried.push(format!("{}: {last}", python.display()));
    }
    Err(Error::Unavailable(format!(
        "no Python with python-dbusmock (template {template:?}), dbus and gi; tried {}",
        tried.join("; ")
    )))
}

/// A method for [`Mock::add_object`]: name, in-signature, out-signature, Python code.
pub type MockMethod<'a> = (&'a str, &'a str, &'a str, &'a str);

/// A python-dbusmock process serving one template on a [`PrivateBus`]. Killed when dropped.
pub struct Mock {
    child: Child,
    conn: zbus::Connection,
    bus_name: String,
    main_path: String,
    version: String,
    log: PathBuf,
    stderr: PathBuf,
}

impl Mock {
    /// Starts `python3 -m dbusmock --template TEMPLATE --parameters JSON` on `bus` and waits until
    /// it owns its bus name.
    pub async fn start(
        bus: &PrivateBus,
        template: &str,
        parameters: &serde_json::Value,
    ) -> Result<Self, Error> {
        let (python, info) = probe(template)?;
        let stem: String = template
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut n = 0;
        let (log, stderr) = loop {
            let log = bus.dir().join(format!("mock-{stem}-{n}.log"));
            if !log.exists() {
                break (log, bus.dir().join(format!("mock-{stem}-{n}.stderr")));
            }
            n += 1;
        };
        let err_file = std::fs::File::create(&stderr)
            .map_err(|e| Error::Failed(format!("{}: {e}", stderr.display())))?;
        let out_file = err_file
            .try_clone()
            .map_err(|e| Error::Failed(format!("{}: {e}", stderr.display())))?;
        let mut child = Command::new(&python)
            .args(["-m", "dbusmock", "--template", template])
            .arg("--parameters")
            .arg(parameters.to_string())
            .arg("--logfile")
            .arg(&log)
            // Only the mock's environment names the private bus, whichever bus its template uses.
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(err_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Failed(format!("starting {}: {e}", python.display())))?;

        let conn = bus.connect().await?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if bus.has_owner(&conn, &info.bus_name).await? {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Failed(format!(
                    "dbusmock {template} exited with {status}: {}",
                    read_lossy(&stderr)
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Failed(format!(
                    "dbusmock {template} did not claim {} within 20 s: {}",
                    info.bus_name,
                    read_lossy(&stderr)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            child,
            conn,
            bus_name: info.bus_name,
            main_path: info.main_path,
            version: info.version,
            log,
            stderr,
        })
    }

    /// The well-known name the template claims (`org.freedesktop.ModemManager1`).
    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    /// The template's main object (`/org/freedesktop/ModemManager1`).
    pub fn main_path(&self) -> &str {
        &self.main_path
    }

    /// python-dbusmock's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Calls any method on any of the mock's objects: template helpers such as ModemManager's
    /// `AddSimpleModem`, or the service's own methods.
    pub async fn call<B>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> Result<zbus::Message, Error>
    where
        B: serde::Serialize + DynamicType,
    {
        self.conn
            .call_method(
                Some(self.bus_name.as_str()),
                path,
                Some(interface),
                method,
                body,
            )
            .await
            .map_err(|e| {
                Error::Failed(format!(
                    "{interface}.{method} on {path}: {e}\n{}",
                    read_lossy(&self.stderr)
                ))
            })
    }

    /// `AddObject`: a new object at `path` with `properties` and `methods` on `interface`.
    /// Like dbusmock itself, this emits no `InterfacesAdded`; use [`Mock::emit_signal`].
    pub async fn add_object(
        &self,
        path: &str,
        interface: &str,
        properties: &[(&str, Value<'_>)],
        methods: &[MockMethod<'_>],
    ) -> Result<(), Error> {
        let props: HashMap<&str, &Value<'_>> = properties.iter().map(|(k, v)| (*k, v)).collect();
        self.call(
            &self.main_path,
            MOCK_IFACE,
            "AddObject",
            &(path, interface, props, methods.to_vec()),
        )
        .await
        .map(drop)
    }

    /// `RemoveObject` (no `InterfacesRemoved` either).
    pub async fn remove_object(&self, path: &str) -> Result<(), Error> {
        self.call(&self.main_path, MOCK_IFACE, "RemoveObject", &(path,))
            .await
            .map(drop)
    }

    /// `AddProperty` on the object at `path`. No signal.
    pub async fn add_property(
        &self,
        path: &str,
        interface: &str,
        name: &str,
        value: Value<'_>,
    ) -> Result<(), Error> {
        self.call(path, MOCK_IFACE, "AddProperty", &(interface, name, value))
            .await
            .map(drop)
    }

    /// `UpdateProperties` on the object at `path`: sets existing properties and emits one
    /// `PropertiesChanged`.
    pub async fn update_properties(
        &self,
        path: &str,
        interface: &str,
        properties: &[(&str, Value<'_>)],
    ) -> Result<(), Error> {
        let props: HashMap<&str, &Value<'_>> = properties.iter().map(|(k, v)| (*k, v)).collect();
        self.call(path, MOCK_IFACE, "UpdateProperties", &(interface, props))
            .await
            .map(drop)
    }

    /// `EmitSignal` from the object at `path`; `signature` describes `args`.
    pub async fn emit_signal(
        &self,
        path: &str,
        interface: &str,
        name: &str,
        signature: &str,
        args: Vec<Value<'_>>,
    ) -> Result<(), Error> {
        self.call(
            path,
            MOCK_IFACE,
            "EmitSignal",
            &(interface, name, signature, args),
        )
        .await
        .map(drop)
    }

    /// `GetMethodCalls`: the calls of `method` on the object at `path` so far, as (timestamp,
    /// arguments).
    pub async fn method_calls(
        &self,
        path: &str,
        method: &str,
    ) -> Result<Vec<(u64, Vec<OwnedValue>)>, Error> {
        let reply = self
            .call(path, MOCK_IFACE, "GetMethodCalls", &(method,))
            .await?;
        reply
            .body()
            .deserialize()
            .map_err(failed("GetMethodCalls reply"))
    }

    /// `ClearCalls` on the object at `path`.
    pub async fn clear_calls(&self, path: &str) -> Result<(), Error> {
        self.call(path, MOCK_IFACE, "ClearCalls", &())
            .await
            .map(drop)
    }

    /// The mock's call log and its stderr, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} ---\n{}\n--- {} ---\n{}",
            self.log.display(),
            read_lossy(&self.log),
            self.stderr.display(),
            read_lossy(&self.stderr)
        )
    }

    /// Stops the mock and waits until it has left the bus (its name's owner change is sent).
    pub async fn stop(mut self) -> Result<(), Error> {
        self.child
            .kill()
            .await
            .map_err(|e| Error::Failed(format!("stopping dbusmock: {e}")))
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_template_dbusmock_lacks_is_unavailable_and_named() {
        let bus = crate::skip_unless_dbus!(PrivateBus::start().await);
        let err = match Mock::start(&bus, "no_such_template", &serde_json::json!({})).await {
            Ok(_) => panic!("a mock without a template started"),
            Err(e) => e,
        };
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("no_such_template"), "{err}");
    }

    #[tokio::test]
    async fn the_bus_serves_and_mocks_record_calls() {
        let bus = crate::skip_unless_dbus!(PrivateBus::start().await);
        let mock = crate::skip_unless_dbus!(
            Mock::start(&bus, "modemmanager", &serde_json::json!({})).await
        );
        let conn = bus.connect().await.unwrap();
        assert!(bus.has_owner(&conn, mock.bus_name()).await.unwrap());
        mock.call(
            mock.main_path(),
            "org.freedesktop.ModemManager1",
            "ScanDevices",
            &(),
        )
        .await
        .unwrap();
        let calls = mock
            .method_calls(mock.main_path(), "ScanDevices")
            .await
            .unwrap();
        assert_eq!(calls.len(), 1, "{}", mock.logs());
        mock.clear_calls(mock.main_path()).await.unwrap();
        let calls = mock
            .method_calls(mock.main_path(), "ScanDevices")
            .await
            .unwrap();
        assert!(calls.is_empty());
    }
}
