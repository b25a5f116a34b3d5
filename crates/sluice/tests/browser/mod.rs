//! A headless Chromium driven over the W3C WebDriver protocol: plain HTTP and JSON to Debian's
//! `chromedriver`, with reqwest. Nothing is downloaded: the browser is the one installed (`apt-get install
//! chromium chromium-driver`), and without it the tests that need it say so and skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The key the WebDriver protocol names elements by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait for the page lasts before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running browser session. Dropping it ends the session and stops the driver.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: std::process::Child,
    profile: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium with a fresh profile. `Err` says why the browser
    /// tests cannot run here (turned off, or Chromium or its driver not installed).
    pub async fn start(profile: PathBuf) -> Result<Self, String> {
        if std::env::var("SLUICE_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
            return Err("SLUICE_SKIP_BROWSER_TESTS=1".to_owned());
        }
        let chromium = on_path("chromium")
            .or_else(|| on_path("chromium-browser"))
            .ok_or("chromium is not installed (apt-get install -y chromium chromium-driver)")?;
        let driver_bin =
            on_path("chromedriver").ok_or("chromedriver is not installed (apt-get install -y chromium-driver)")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let http = sluice::wiring::http_client(Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let base = format!("http://127.0.0.1:{port}");
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
        // From here on the driver belongs to `browser`, whose drop stops it whatever happens next.
        let driver = std::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start chromedriver: {e}"))?;
        let mut browser = Self {
            http,
            base,
            session: String::new(),
            driver,
            profile,
        };
        let started = Instant::now();
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            if started.elapsed() > PATIENCE {
                return Err("chromedriver did not start".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", browser.profile.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser
            .call(reqwest::Method::POST, "/session", Some(capabilities))
            .await?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {created}"))?
            .to_owned();
        Ok(browser)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("{path}: {e}"))?;
        if status.is_success() {
            Ok(body["value"].clone())
        } else {
            Err(format!("{path}: {status} {}", body["value"]))
        }
    }

    async fn session_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.session_call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Sets the window's size in CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.session_call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.session_call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits until `script` returns a truthy value, and returns it.
    pub async fn until(&self, what: &str, script: &str, args: Value) -> Value {
        let started = Instant::now();
        loop {
            let value = self.run(script, args.clone()).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "timed out waiting for {what}; the page shows:\n{}",
                self.text("main").await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let started = Instant::now();
        loop {
            let path = format!("/session/{}/element", self.session);
            let found = self
                .call(
                    reqwest::Method::POST,
                    &path,
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Ok(value) = found
                && let Some(id) = value[ELEMENT].as_str()
            {
                return Element {
                    browser: self,
                    id: id.to_owned(),
                };
            }
            assert!(
                started.elapsed() < PATIENCE,
                "timed out waiting for `{css}`; the page shows:\n{}",
                self.text("main").await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the first element matching `css`, if there is one now.
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .run(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                json!([css]),
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// Presses `key` (a WebDriver key code such as `"\u{E004}"` for Tab) on whatever has focus.
    pub async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key},
        ]}]});
        self.session_call(reqwest::Method::POST, "/actions", Some(actions))
            .await;
    }

    /// A PNG of the page, as wide as the window and as tall as the page (at most `max_height`).
    pub async fn screenshot(&self, path: &Path, width: u32, max_height: u32) {
        // The window's height includes the browser's own frame, even headless.
        let measured = self
            .run(
                "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
                json!([]),
            )
            .await;
        let page = measured[0].as_u64().unwrap_or(900) as u32;
        let frame = measured[1].as_u64().unwrap_or(0) as u32;
        self.resize(width, page.clamp(400, max_height) + frame).await;
        // Scrolled to the top, and two frames for the layout to follow the new size.
        self.run(
            "window.scrollTo(0, 0);
             return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done(true))));",
            json!([]),
        )
        .await;
        let encoded = self.session_call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Runs a Chrome DevTools Protocol command (`Emulation.setCPUThrottlingRate`...).
    pub async fn devtools(&self, command: &str, params: Value) -> Value {
        self.session_call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": command, "params": params})),
        )
        .await
    }

    /// The browser's console messages since the last call.
    pub async fn console_log(&self) -> Vec<Value> {
        let value = self
            .session_call(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"})))
            .await;
        value.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (which closes Chromium) without a runtime: the test may be unwinding.
        if !self.session.is_empty() {
            use std::io::{Read, Write};
            let address = self.base.trim_start_matches("http://").to_owned();
            if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let request = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
                    self.session
                );
                // The answer comes once Chromium has quit; the driver may keep the connection open after.
                if stream.write_all(request.as_bytes()).is_ok() {
                    let mut answer = [0u8; 512];
                    let _ = stream.read(&mut answer);
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// An element of the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    fn path(&self, action: &str) -> String {
        format!("/element/{}/{action}", self.id)
    }

    /// Clicks it.
    pub async fn click(&self) {
        self.browser
            .session_call(reqwest::Method::POST, &self.path("click"), Some(json!({})))
            .await;
    }

    /// Replaces what is typed in it with `text`, key by key.
    pub async fn type_text(&self, text: &str) {
        self.browser
            .session_call(reqwest::Method::POST, &self.path("clear"), Some(json!({})))
            .await;
        self.browser
            .session_call(reqwest::Method::POST, &self.path("value"), Some(json!({"text": text})))
            .await;
    }

    /// A DOM property (`value`, `checked`...).
    pub async fn property(&self, name: &str) -> Value {
        self.browser
            .session_call(reqwest::Method::GET, &self.path(&format!("property/{name}")), None)
            .await
    }
}
