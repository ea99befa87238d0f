//! The `vakt-server` binary: `serve` (the service: gRPC and the web console) and `demo` (a
//! server with a local agent enrolled against it, for a first look).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tokio::net::TcpListener;
use vakt_server::config::{FileConfig, Flags, HostName, Settings};
use vakt_server::console::Transport;
use vakt_server::server;

#[derive(Parser)]
#[command(name = "vakt-server", version, about = "Vakt control server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start and matched at once: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        /// A TOML file with data, listen, console and hostnames (/etc/vakt/server.toml when
        /// installed); flags given here override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory: the store, the CA and keys, admin.token on first start (with
        /// PostgreSQL: only this replica's lock, ca.pem and server certificate, and
        /// admin.token on the replica that initialised the database).
        #[arg(long, required_unless_present = "config")]
        data: Option<PathBuf>,
        /// Keep the store in PostgreSQL (postgresql://USER@HOST:PORT/DATABASE) instead of
        /// the embedded store in the data directory. The schema is created or migrated at
        /// start. Overrides `store =` in the config file. Needs --secrets-key.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// With --store: the key that seals the CA key and command-signing keys in the
        /// database, shared by every replica. Created (0600) by the replica that initialises
        /// an empty database if FILE does not exist; give every other replica a copy.
        /// Overrides `secrets_key =` in the config file.
        #[arg(long, value_name = "FILE")]
        secrets_key: Option<PathBuf>,
        /// gRPC over TLS, for agents and the admin API [default: 127.0.0.1:7443].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// The web console's address [default: 127.0.0.1:7480]. HTTPS with the server
        /// certificate, except on a loopback address, where it is plain HTTP unless
        /// --console-tls is given.
        #[arg(long)]
        console: Option<SocketAddr>,
        /// Serve the console over HTTPS on a loopback address too.
        #[arg(long)]
        console_tls: bool,
        /// A host name agents use to reach this server (repeatable; replaces the config
        /// file's list); goes into the server certificate besides localhost and 127.0.0.1.
        #[arg(long = "hostname", value_parser = HostName::from_str)]
        hostnames: Vec<HostName>,
        /// Serve Prometheus metrics at /metrics on ADDR; off by default. HTTPS with the
        /// server certificate, except on a loopback address, where it is plain HTTP unless
        /// --metrics-tls is given. Any other address needs --metrics-token-file.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        /// A file with the bearer token every scrape must carry (one line, at least 16
        /// characters, e.g. from `openssl rand -hex 32`), read at start; without it a scrape
        /// gets 401. Overrides `metrics_token_file =` in the config file.
        #[arg(long, value_name = "FILE")]
        metrics_token_file: Option<PathBuf>,
        /// Serve the metrics over HTTPS on a loopback address too.
        #[arg(long)]
        metrics_tls: bool,
        #[command(flatten)]
        mail: MailArgs,
        /// Enrollments per second for the whole server (bursts of five times as many);
        /// 0: no limit.
        #[arg(long, default_value_t = 100.0)]
        enroll_rate: f64,
        /// Enrollments per second from one source address (bursts of four times as many);
        /// 0: no limit.
        #[arg(long, default_value_t = 5.0)]
        enroll_rate_per_source: f64,
        /// How long device certificates are valid ("825days", "90s"); agents renew theirs
        /// when a third of it is left. At least 1 minute.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "825days")]
        device_cert_lifetime: Duration,
        /// How long the server's own certificate is valid; the running server reissues it
        /// when a third is left. At least 1 minute. (For tests; undocumented.)
        #[arg(long, hide = true, value_parser = humantime::parse_duration, default_value = "397days")]
        server_cert_lifetime: Duration,
    },
    /// Copy an embedded installation (stopped) into an empty PostgreSQL database: every
    /// record as it is, and the CA and command-signing keys sealed with the secrets key.
    /// Afterwards `serve --data DIR --store URL --secrets-key FILE` serves it; the embedded
    /// store in DIR is left as it was.
    Migrate {
        /// The data directory of the embedded installation (no server may run on it).
        #[arg(long)]
        data: PathBuf,
        /// The empty PostgreSQL database, postgresql://USER@HOST:PORT/DATABASE.
        #[arg(long, value_name = "URL")]
        to: String,
        /// The key that seals the secrets in the database; created (0600) if absent.
        #[arg(long, value_name = "FILE")]
        secrets_key: PathBuf,
    },
    /// A server on its embedded store plus one local agent enrolled against it.
    Demo {
        /// Where the demo keeps its data (server and agent); reused on the next run.
        #[arg(long, default_value = "vakt-demo")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// The web console's address (plain HTTP on loopback).
        #[arg(long, default_value = "127.0.0.1:7480")]
        console: SocketAddr,
        /// How often the demo agent reports.
        #[arg(long, default_value = "60s")]
        report_interval: String,
    },
}

/// Where notifications (new violations to managers, loss reports) are mailed.
#[derive(clap::Args)]
struct MailArgs {
    /// SMTP relay: smtp://host:port (plain, local relay), smtp://host?tls=required (STARTTLS),
    /// smtps://host (TLS); user:pass@ before the host if it needs a login.
    #[arg(long, env = "VAKT_SMTP")]
    smtp: Option<String>,
    /// The sender of notification mail [default: vakt@localhost].
    #[arg(long)]
    mail_from: Option<String>,
    /// Who hears of a violation when the device's person has no known manager.
    #[arg(long)]
    it_mail: Option<String>,
    /// POST every event (new violation, loss reported) as JSON here too (repeatable).
    #[arg(long = "webhook")]
    webhooks: Vec<String>,
}

impl MailArgs {
    /// Flags override the config file's `[mail]` table.
    fn config(self, file: vakt_server::config::MailFile) -> vakt_server::notify::NotifyConfig {
        let smtp_url = self.smtp.or(file.smtp);
        if smtp_url.is_none() {
            eprintln!(
                "vakt-server: no SMTP relay configured (--smtp or [mail] smtp): notifications are queued, not sent"
            );
        }
        vakt_server::notify::NotifyConfig {
            smtp_url,
            from: self
                .mail_from
                .or(file.from)
                .unwrap_or_else(|| "vakt@localhost".into()),
            it_address: self.it_mail.or(file.it_address),
            webhooks: if self.webhooks.is_empty() {
                file.webhooks
            } else {
                self.webhooks
            },
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VAKT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vakt-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve {
            config,
            data,
            store,
            secrets_key,
            listen,
            console,
            console_tls,
            hostnames,
            metrics,
            metrics_token_file,
            metrics_tls,
            mail,
            enroll_rate,
            enroll_rate_per_source,
            device_cert_lifetime,
            server_cert_lifetime,
        } => {
            vakt_server::pki::check_cert_lifetime(device_cert_lifetime)
                .context("--device-cert-lifetime")?;
            vakt_server::pki::check_cert_lifetime(server_cert_lifetime)
                .context("--server-cert-lifetime")?;
            // Before anything is opened: files the server's own, and room for the fleet.
            vakt_server::hardening::private_umask();
            log_file_limit();
            let file = config.as_deref().map(FileConfig::load).transpose()?;
            let mail_file = file.as_ref().map(|f| f.mail.clone()).unwrap_or_default();
            let flags = Flags {
                data,
                store: store.map(vakt_server::config::StoreUrl::from_flag),
                secrets_key,
                listen,
                console,
                hostnames,
                metrics,
                metrics_token_file,
                metrics_tls,
            };
            let Settings {
                data,
                store,
                secrets_key,
                listen,
                console,
                hostnames,
                metrics,
                metrics_token_file,
                console_oidc,
            } = Settings::resolve(file, flags)?;
            // Before anything listens: a missing client secret stops the start, not a login.
            let login = vakt_server::console::oidc::Login::from_config(console_oidc.as_ref())?;
            let scrape_token = metrics_token_file
                .as_deref()
                .map(vakt_server::metrics_access::ScrapeToken::load)
                .transpose()?;
            let rate = |per_s: f64, burst: f64| match per_s {
                r if r > 0.0 => vakt_server::limit::Rate {
                    per_s: r,
                    burst: r * burst,
                },
                _ => vakt_server::limit::Rate::UNLIMITED,
            };
            let location = match store {
                Some(url) => vakt_server::store::StoreLocation::Postgres(url.into_string()),
                None => vakt_server::store::StoreLocation::Embedded,
            };
            let state = server::prepare_at(
                &data,
                &location,
                secrets_key.as_deref(),
                &hostnames,
                mail.config(mail_file),
            )
            .await?
            .with_enroll_limits(vakt_server::limit::EnrollLimits {
                per_source: rate(enroll_rate_per_source, 4.0),
                global: rate(enroll_rate, 5.0),
            });
            state.pki.set_device_cert_lifetime(device_cert_lifetime)?;
            vakt_server::certs::keep_fresh(state.pki.clone(), server_cert_lifetime)?;
            let listener = bind(listen, "--listen").await?;
            let console_listener = bind(console, "--console").await?;
            let transport = Transport::for_addr(console_listener.local_addr()?, console_tls);
            print_console_line(&console_listener, transport, &data)?;
            if let Some(addr) = metrics {
                let metrics_listener = bind(addr, "--metrics").await?;
                let local = metrics_listener.local_addr()?;
                let transport = Transport::for_addr(local, metrics_tls);
                let how = match &metrics_token_file {
                    Some(f) => format!("bearer token from {}", f.display()),
                    None => "no token: reachable from this machine only".into(),
                };
                let endpoint = server::MetricsEndpoint::new(
                    metrics_listener,
                    state.clone(),
                    vakt_server::metrics_access::MetricsAccess {
                        transport,
                        token: scrape_token,
                    },
                )?;
                eprintln!(
                    "vakt-server: serving metrics on {}://{local}/metrics ({how})",
                    transport.scheme()
                );
                // Ends with the process; a scrape holds nothing a shutdown must wait for.
                tokio::spawn(endpoint.serve(std::future::pending()));
            }
            eprintln!(
                "vakt-server: serving gRPC on https://{} (data in {})",
                listener.local_addr()?,
                data.display()
            );
            serve_both(
                listener,
                console_listener,
                transport,
                login,
                state,
                vakt_agent::daemon::shutdown_signal(),
            )
            .await?;
        }
        Cmd::Migrate {
            data,
            to,
            secrets_key,
        } => {
            vakt_server::hardening::private_umask();
            let s = vakt_server::migrate::migrate(&data, &to, &secrets_key)?;
            println!(
                "migrated {} into {}: {} rows in {} trees, counts match; audit chain verified ({} entries)",
                data.display(),
                vakt_server::redact::url(&to),
                s.rows(),
                s.trees.len(),
                s.audit_entries
            );
            for (tree, n) in &s.trees {
                println!("  {tree:<16} {n}");
            }
            if s.key_created {
                println!(
                    "the secrets key was written to {}; every replica needs a copy",
                    secrets_key.display()
                );
            }
            println!(
                "serve it with: vakt-server serve --data {} --store URL --secrets-key {} (the embedded store in {} is left as it was)",
                data.display(),
                secrets_key.display(),
                data.join("db").display()
            );
        }
        Cmd::Demo {
            data,
            listen,
            console,
            report_interval,
        } => demo(&data, listen, console, &report_interval).await?,
    }
    Ok(())
}

/// Raises the open-files limit as far as allowed and says what it is: each held agent is one.
fn log_file_limit() {
    match vakt_server::hardening::raise_file_limit() {
        Ok((before, after)) if after.soft > before.soft => tracing::info!(
            "open files limit raised from {} to {} (the hard limit)",
            before.soft,
            after.soft
        ),
        Ok((_, after)) => tracing::info!("open files limit {} (the hard limit)", after.soft),
        Err(e) => {
            let l = vakt_server::hardening::file_limit();
            tracing::warn!(
                "open files limit {} (hard {}), could not raise it: {e}; set LimitNOFILE= in the unit",
                l.soft,
                l.hard
            );
        }
    }
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another server running there? pass {flag})")
    })
}

/// Says where the console is and how it is protected; the test harness reads this line.
fn print_console_line(
    listener: &TcpListener,
    transport: Transport,
    data: &Path,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let how = match transport {
        Transport::Plain => {
            "plain HTTP, reachable from this machine only; --console-tls for HTTPS".to_string()
        }
        Transport::Tls => format!(
            "TLS with the server certificate; browsers must trust {}",
            data.join("ca.pem").display()
        ),
    };
    eprintln!(
        "vakt-server: serving the console on {}://{addr} ({how})",
        transport.scheme()
    );
    Ok(())
}

/// Runs the gRPC server and the console until `shutdown`, or until either of them stops on its
/// own (an error), which stops the other too.
async fn serve_both(
    grpc: TcpListener,
    console: TcpListener,
    transport: Transport,
    login: vakt_server::console::oidc::Login,
    state: vakt_server::api::State,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut console_task = tokio::spawn(server::run_console(
        console,
        state.clone(),
        transport,
        login,
        stopped(stop_rx.clone()),
    ));
    let mut grpc_task = tokio::spawn(server::run(grpc, state, stopped(stop_rx)));
    let (mut console_done, mut grpc_done) = (None, None);
    tokio::select! {
        _ = shutdown => {}
        r = &mut console_task => console_done = Some(r),
        r = &mut grpc_task => grpc_done = Some(r),
    }
    let _ = stop_tx.send(true);
    // Both stop at once (the gRPC side bounds its own wait, see `server::run`), so the whole
    // shutdown stays within a service manager's patience.
    let grpc_done = async {
        match grpc_done {
            Some(r) => r,
            None => grpc_task.await,
        }
    };
    // A browser holding a request open does not keep the server from stopping.
    let console_done = async {
        match console_done {
            Some(r) => r,
            None => match tokio::time::timeout(Duration::from_secs(5), &mut console_task).await {
                Ok(r) => r,
                Err(_) => {
                    console_task.abort();
                    Ok(Ok(()))
                }
            },
        }
    };
    let (grpc_done, console_done) = tokio::join!(grpc_done, console_done);
    grpc_done.context("the gRPC server task")??;
    console_done.context("the console task")??;
    Ok(())
}

async fn demo(
    data: &Path,
    listen: SocketAddr,
    console: SocketAddr,
    report_interval: &str,
) -> anyhow::Result<()> {
    let data = std::path::absolute(data)?;
    let server_dir = data.join("server");
    let agent_dir = data.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let state = server::prepare(
        &server_dir,
        &[],
        vakt_server::notify::NotifyConfig::default(),
    )
    .await?;
    let listener = bind(listen, "--listen").await?;
    let addr = listener.local_addr()?;
    let console_listener = bind(console, "--console").await?;
    let console_addr = console_listener.local_addr()?;
    let transport = Transport::for_addr(console_addr, false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server_state = state.clone();
    let server_task = tokio::spawn(serve_both(
        listener,
        console_listener,
        transport,
        vakt_server::console::oidc::Login::default(),
        server_state,
        async move {
            let _ = server_stop.changed().await;
        },
    ));

    // The local agent: its own config and state, enrolled with a token made here.
    let agent_state = agent_dir.join("state");
    let token_file = agent_dir.join("enroll.token");
    if !agent_state.join("identity.json").exists() {
        let (token, _) = vakt_server::api::admin::create_enroll_token(
            &state.store,
            1,
            600,
            "system:demo",
            "demo agent",
        )
        .await?;
        vakt_server::fsutil::write_private(&token_file, format!("{token}\n").as_bytes())?;
    }
    let config_path = agent_dir.join("agent.toml");
    let config_text = format!(
        "server = \"https://{addr}\"\nca = {ca:?}\nstate_dir = {st:?}\nenroll_token_file = {tf:?}\nreport_interval = {ri:?}\n",
        ca = server_dir.join("ca.pem").display().to_string(),
        st = agent_state.display().to_string(),
        tf = token_file.display().to_string(),
        ri = report_interval,
    );
    std::fs::write(&config_path, config_text)?;
    let cfg = vakt_agent::config::Config::load(&config_path)?;
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut agent_stop = stop_rx.clone();
    let agent_task = tokio::spawn(async move {
        vakt_agent::daemon::run(
            cfg,
            false,
            async move {
                let _ = agent_stop.changed().await;
            },
            Some(ev_tx),
        )
        .await
    });

    // Wait for the first acknowledged report so what we print is true.
    let device = tokio::time::timeout(Duration::from_secs(60), async {
        let mut device = String::new();
        while let Some(ev) = ev_rx.recv().await {
            match ev {
                vakt_agent::daemon::Event::Enrolled { device_id } => device = device_id,
                vakt_agent::daemon::Event::Reported { .. } => return Some(device),
                vakt_agent::daemon::Event::StreamUp => {}
            }
        }
        None
    })
    .await;
    let device_id = match device {
        Ok(Some(d)) if !d.is_empty() => d,
        Ok(Some(_)) => vakt_agent::state::StateDir::open(&agent_state)?
            .identity()?
            .map(|i| i.device_id)
            .unwrap_or_default(),
        _ => {
            let _ = stop_tx.send(true);
            match agent_task.await {
                Ok(Err(e)) => bail!("the demo agent failed: {e}"),
                _ => bail!("the demo agent did not report within 60 s; see the log above"),
            }
        }
    };
    let vakt = std::env::current_exe()?
        .parent()
        .map(|p| p.join("vakt"))
        .filter(|p| p.exists())
        .map_or_else(
            || "cargo run --release --bin vakt --".to_string(),
            |p| p.display().to_string(),
        );
    println!(
        "\nVakt demo is running.\n\
         \n  server   https://{addr}  (data: {server})\
         \n  console  {scheme}://{console_addr}  (log in with the token in {tok})\
         \n  agent    {device_id}, reporting every {report_interval} (config: {cfg})\
         \n\nLook with the IT command line, in another terminal:\
         \n  export VAKT_SERVER=https://{addr} VAKT_CA={ca} VAKT_TOKEN_FILE={tok}\
         \n  {vakt} devices\
         \n  {vakt} device show {device_id} --json\
         \n\nStop with Ctrl-C; the data stays in {data} for the next run.",
        server = server_dir.display(),
        cfg = config_path.display(),
        ca = server_dir.join("ca.pem").display(),
        tok = server_dir.join("admin.token").display(),
        data = data.display(),
        scheme = transport.scheme(),
    );
    vakt_agent::daemon::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = agent_task.await;
    server_task.await??;
    Ok(())
}
