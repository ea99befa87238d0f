//! A small W3C WebDriver client: Debian's `chromedriver` driving headless `chromium`, over
//! chromedriver's HTTP protocol (<https://www.w3.org/TR/webdriver2/>), with `ureq`.
//!
//! Only what the console's browser test needs: navigate, find elements by CSS selector, click,
//! type, read text and attributes, cookies, the page source and screenshots. Chromium runs with
//! the flags this machine needs (no sandbox as root, no background networking: the network is
//! closed) and a fresh profile directory of its own.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// W3C's key for an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where a tool is looked for: the environment variable first, then Debian's path, then PATH.
fn find_tool(env: &str, debian: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).map(PathBuf::from) {
        return p.exists().then_some(p);
    }
    let debian = PathBuf::from(debian);
    if debian.exists() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.exists())
}

/// Chromium and chromedriver, or why not. `.ci/install-browser.sh` installs both.
pub fn tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = find_tool(
        "VAKT_CHROMIUM",
        "/usr/bin/chromium",
        &["chromium", "chromium-browser"],
    )
    .ok_or("chromium is not installed (apt-get install chromium, or set VAKT_CHROMIUM)")?;
    let driver = find_tool(
        "VAKT_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        &["chromedriver"],
    )
    .ok_or(
        "chromedriver is not installed (apt-get install chromium-driver, or set VAKT_CHROMEDRIVER)",
    )?;
    Ok((chromium, driver))
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A chromedriver process with one browser session; both end when this is dropped.
pub struct Browser {
    driver: Child,
    base: String,
    http: ureq::Agent,
    _profile: tempfile::TempDir,
}

/// A loopback port nothing listens on now (the PostgreSQL harness takes one too).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session with a
    /// 1366×768 window (a common laptop screen). chromedriver's log goes to `log`.
    pub fn start(chromium: &Path, chromedriver: &Path, log: &Path) -> Self {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut b = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http,
            _profile: profile,
        };
        let start = Instant::now();
        loop {
            let ready = b
                .http
                .get(format!("{}/status", b.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not become ready; its log is {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1366,768",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {v}"))
            .to_string();
        b.base = format!("{}/session/{id}", b.base);
        b
    }

    /// One WebDriver command: its `value`, or the HTTP status and WebDriver's error message.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let res = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, Some(b)) => self.http.post(&url).send_json(b),
            (_, None) => self.http.post(&url).send_json(json!({})),
        };
        let mut res = res.map_err(|e| e.to_string())?;
        let status = res.status();
        let v: Value = res
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_json()
            .map_err(|e| format!("unreadable answer: {e}"))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("{status}: {}", v["value"]["message"]))
        }
    }

    /// One WebDriver command; its `value`. A WebDriver error panics with its message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"))
    }

    /// Runs `action` (a click or a key that submits a form or follows a link) and waits until
    /// the browser has left the current document. WebDriver's click does not reliably wait for
    /// the navigation a form submission starts, so without this the next command could read
    /// the old page.
    pub fn navigating(&self, action: impl FnOnce()) {
        let old = self.find("html");
        action();
        let start = Instant::now();
        while self
            .try_call("GET", &format!("/element/{}/name", old.0), None)
            .is_ok()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the page did not change; still on {}",
                self.current_url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks a link or a form's button and waits for the next page.
    pub fn click_through(&self, e: &Element) {
        self.navigating(|| self.click(e));
    }

    /// Types `text` and Enter into a form field and waits for the next page.
    pub fn submit_typing(&self, e: &Element, text: &str) {
        self.navigating(|| self.type_into(e, &format!("{text}\u{E007}")));
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    pub fn current_url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn title(&self) -> String {
        self.call("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn element_of(v: &Value) -> Element {
        Element(
            v[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("not an element: {v}"))
                .to_string(),
        )
    }

    /// All elements matching a CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map(|a| a.iter().map(Self::element_of).collect())
        .unwrap_or_default()
    }

    /// The first element matching a CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        self.find_all(css).into_iter().next()
    }

    /// The first element matching a CSS selector; panics (with the page's URL) if none.
    pub fn find(&self, css: &str) -> Element {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no '{css}' on {}", self.current_url()))
    }

    /// The first element whose visible text contains `text`, among those matching `css`.
    pub fn find_with_text(&self, css: &str, text: &str) -> Element {
        self.find_all(css)
            .into_iter()
            .find(|e| self.text(e).contains(text))
            .unwrap_or_else(|| panic!("no '{css}' with text '{text}' on {}", self.current_url()))
    }

    pub fn click(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/click", e.0), None);
    }

    /// Types `text` into an element (`\u{E007}` is the Enter key).
    pub fn type_into(&self, e: &Element, text: &str) {
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        );
    }

    pub fn clear(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/clear", e.0), None);
    }

    pub fn text(&self, e: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{}/attribute/{name}", e.0), None)
            .as_str()
            .map(str::to_string)
    }

    /// The element that has the keyboard focus.
    pub fn active_element(&self) -> Element {
        Self::element_of(&self.call("GET", "/element/active", None))
    }

    /// The page's cookies as WebDriver reports them (name, value, httpOnly, secure, sameSite).
    pub fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Saves a screenshot of the viewport as PNG.
    pub fn screenshot(&self, path: &Path) {
        write_png(&self.call("GET", "/screenshot", None), path);
    }

    /// Saves a screenshot of one element (scrolled into view, whole) as PNG.
    pub fn element_screenshot(&self, e: &Element, path: &Path) {
        let data = self.call("GET", &format!("/element/{}/screenshot", e.0), None);
        write_png(&data, path);
    }

    /// Reloads the page until `f` is true of its source; panics with `what` after `timeout`.
    pub fn reload_until(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            if f(&self.source()) {
                return;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(300));
            self.navigating(|| {
                self.call("POST", "/refresh", None);
            });
        }
    }
}

/// Writes WebDriver's base64 PNG to `path`, creating its directory.
fn write_png(data: &Value, path: &Path) {
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(data.as_str().unwrap_or_default())
        .expect("a base64 screenshot");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("the artifacts directory");
    }
    std::fs::write(path, png).expect("write the screenshot");
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and Chromium) before the driver goes.
        let _ = self.http.delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
