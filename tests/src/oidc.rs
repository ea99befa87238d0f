//! A real OpenID Connect provider for the console's single sign-on tests: oidc-provider-mock
//! (PyPI) as a process on a loopback port, in the virtualenv `.ci/install-oidc.sh` makes. It
//! speaks the whole protocol (discovery, JWKS, authorization code with PKCE, signed ID tokens)
//! and takes any client id; its issuer is the URL it is reached at. Users and their claims are
//! set over its HTTP API (`PUT /users/{sub}`), and a browser signs in as one by typing its
//! `sub` into the provider's form.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `.ci/install-oidc.sh` puts a Python with oidc-provider-mock.
pub const VENV_PYTHON: &str = "/opt/vakt-ci/oidc-mock/bin/python3";
/// Overrides the Python that runs the provider.
pub const PYTHON_ENV: &str = "VAKT_OIDC_MOCK_PYTHON";

/// A Python that can run oidc-provider-mock, or why there is none.
pub fn python() -> Result<PathBuf, String> {
    let p = std::env::var_os(PYTHON_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(VENV_PYTHON));
    let ok = Command::new(&p)
        .args(["-c", "import oidc_provider_mock"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(p)
    } else {
        Err(format!(
            "{} cannot import oidc_provider_mock (run .ci/install-oidc.sh, or set {PYTHON_ENV})",
            p.display()
        ))
    }
}

/// The provider process; killed when dropped.
pub struct Provider {
    child: Child,
    /// Its issuer, `http://127.0.0.1:PORT`.
    pub issuer: String,
    http: ureq::Agent,
}

impl Provider {
    /// Starts the provider on a free loopback port and waits until it serves its discovery
    /// document.
    pub fn start(python: &std::path::Path) -> Self {
        let port = crate::free_port();
        let child = Command::new(python)
            .args(["-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start oidc-provider-mock");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut p = Self {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
            http,
        };
        let discovery = format!("{}/.well-known/openid-configuration", p.issuer);
        let start = Instant::now();
        loop {
            if let Ok(r) = p.http.get(&discovery).call()
                && r.status() == 200
            {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("oidc-provider-mock exited with {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "oidc-provider-mock did not serve {discovery} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sets the claims the provider puts in `sub`'s ID token.
    pub fn set_user(&self, sub: &str, claims: serde_json::Value) {
        let r = self
            .http
            .put(&format!("{}/users/{sub}", self.issuer))
            .send_json(&claims)
            .expect("PUT a user's claims");
        assert_eq!(r.status(), 204, "setting {sub}'s claims");
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
