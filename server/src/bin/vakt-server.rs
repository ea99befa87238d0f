//! The `vakt-server` binary: `serve` (the service) and `demo` (a server with a local agent
//! enrolled against it, for a first look).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use vakt_server::server;

#[derive(Parser)]
#[command(name = "vakt-server", version, about = "Vakt control server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        /// Data directory: the store, the CA and keys, admin.token on first start.
        #[arg(long)]
        data: PathBuf,
        /// gRPC over TLS, for agents and the admin API.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// The web console's address.
        #[arg(long, default_value = "127.0.0.1:7480")]
        console: SocketAddr,
        /// A host name agents use to reach this server (repeatable); goes into the server
        /// certificate besides localhost and 127.0.0.1.
        #[arg(long = "hostname")]
        hostnames: Vec<String>,
        /// Enrollments per second for the whole server (bursts of five times as many);
        /// 0: no limit.
        #[arg(long, default_value_t = 100.0)]
        enroll_rate: f64,
        /// Enrollments per second from one source address (bursts of four times as many);
        /// 0: no limit.
        #[arg(long, default_value_t = 5.0)]
        enroll_rate_per_source: f64,
    },
    /// A server on its embedded store plus one local agent enrolled against it.
    Demo {
        /// Where the demo keeps its data (server and agent); reused on the next run.
        #[arg(long, default_value = "vakt-demo")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// How often the demo agent reports.
        #[arg(long, default_value = "60s")]
        report_interval: String,
    },
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
            data,
            listen,
            console,
            hostnames,
            enroll_rate,
            enroll_rate_per_source,
        } => {
            let rate = |per_s: f64, burst: f64| match per_s {
                r if r > 0.0 => vakt_server::limit::Rate {
                    per_s: r,
                    burst: r * burst,
                },
                _ => vakt_server::limit::Rate::UNLIMITED,
            };
            let state = server::prepare(&data, &hostnames)
                .await?
                .with_enroll_limits(vakt_server::limit::EnrollLimits {
                    per_source: rate(enroll_rate_per_source, 4.0),
                    global: rate(enroll_rate, 5.0),
                });
            let listener = bind(listen).await?;
            eprintln!(
                "vakt-server: serving gRPC on https://{} (data in {}; console address {console} is reserved for the web console)",
                listener.local_addr()?,
                data.display()
            );
            server::run(listener, state, shutdown_signal()).await?;
        }
        Cmd::Demo {
            data,
            listen,
            report_interval,
        } => demo(&data, listen, &report_interval).await?,
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another server running there? pass --listen)")
    })
}

async fn demo(data: &Path, listen: SocketAddr, report_interval: &str) -> anyhow::Result<()> {
    let data = std::path::absolute(data)?;
    let server_dir = data.join("server");
    let agent_dir = data.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let state = server::prepare(&server_dir, &[]).await?;
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server_state = state.clone();
    let server_task = tokio::spawn(async move {
        server::run(listener, server_state, async move {
            let _ = server_stop.changed().await;
        })
        .await
    });

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
    );
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = agent_task.await;
    server_task.await??;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
