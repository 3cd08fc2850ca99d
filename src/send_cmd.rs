//! `ringrelay send`: the one-shot client. Reads a message from a file or stdin and sends it;
//! exit 0 when at least one recipient accepted it, 1 with the server's reply otherwise.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;

use ringrelay::client::core::Timeouts;
use ringrelay::client::{
    ClientError, ConnectOptions, SendOptions, SmtpClient, TlsFlagNames, TlsOptions,
};

/// Options of `ringrelay send`.
#[derive(Clone, Debug, Args)]
pub struct SendArgs {
    /// Server as HOST:PORT (default 127.0.0.1:25, or 24 with --lmtp).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Connect to an LMTP server on this Unix socket instead of TCP.
    #[arg(long, value_name = "PATH", requires = "lmtp")]
    pub unix: Option<PathBuf>,
    /// Envelope sender (default: From/Sender of the message, as smtplib's send_message).
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// Envelope recipient; repeat for several (default: To/Cc/Bcc of the message).
    #[arg(long, value_name = "ADDR")]
    pub to: Vec<String>,
    /// STARTTLS before sending (fails if not offered).
    #[arg(long, conflicts_with = "tls")]
    pub starttls: bool,
    /// Implicit TLS from the first byte (port 465 style).
    #[arg(long)]
    pub tls: bool,
    /// Trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Do not verify the server certificate.
    #[arg(long)]
    pub tls_insecure: bool,
    /// Server name to verify in its certificate (default: the host of --server).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// AUTH as this user (mechanism chosen as smtplib's login: CRAM-MD5, PLAIN, LOGIN).
    #[arg(long, value_name = "USER", requires = "auth_password_file")]
    pub auth_user: Option<String>,
    /// File holding the AUTH password (first line).
    #[arg(long, value_name = "FILE", requires = "auth_user")]
    pub auth_password_file: Option<PathBuf>,
    /// Speak LMTP (LHLO, one reply per recipient).
    #[arg(long)]
    pub lmtp: bool,
    /// Send with BDAT (CHUNKING) instead of DATA.
    #[arg(long)]
    pub bdat: bool,
    /// Do not pipeline even when the server offers PIPELINING.
    #[arg(long)]
    pub no_pipelining: bool,
    /// Name for EHLO/HELO/LHLO.
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,
    /// One timeout for every reply, in seconds (default: RFC 5321's per-phase values).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print the transcript to stderr (-vv adds timestamps).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Message file (default: stdin).
    pub file: Option<PathBuf>,
}

/// Runs `ringrelay send`.
pub fn run(args: SendArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringrelay send: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(send(args)) {
        Ok(refused) => {
            for (addr, reply) in &refused {
                eprintln!("ringrelay send: recipient refused: {addr}: {reply}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringrelay send: {e}");
            ExitCode::from(1)
        }
    }
}

async fn send(args: SendArgs) -> Result<ringrelay::client::Refused, ClientError> {
    let mut msg = Vec::new();
    match &args.file {
        Some(path) => msg = std::fs::read(path)?,
        None => {
            std::io::stdin().read_to_end(&mut msg)?;
        }
    }
    let tls = TlsOptions {
        ca_file: args.tls_ca.clone(),
        insecure: args.tls_insecure,
        flag_names: TlsFlagNames::SEND,
    };
    let opts = ConnectOptions {
        timeouts: args
            .timeout
            .map(|s| Timeouts::uniform(Duration::from_secs(s)))
            .unwrap_or_default(),
        local_hostname: args.helo.clone(),
        lmtp: args.lmtp,
        implicit_tls: args.tls.then(|| tls.clone()),
        tls_server_name: args.tls_server_name.clone(),
        debug_level: args.verbose,
        ..ConnectOptions::default()
    };
    let mut client = match &args.unix {
        Some(path) => SmtpClient::connect_unix(path, opts).await?,
        None => {
            let default_port = if args.lmtp { 24 } else { 25 };
            let server = args
                .server
                .clone()
                .unwrap_or_else(|| format!("127.0.0.1:{default_port}"));
            let (host, port) = split_host_port(&server, default_port);
            SmtpClient::connect(&host, port, opts).await?
        }
    };
    client.ehlo_or_helo_if_needed().await?;
    if args.starttls {
        client.starttls(&tls).await?;
    }
    if let (Some(user), Some(file)) = (&args.auth_user, &args.auth_password_file) {
        let password = std::fs::read_to_string(file)?;
        let password = password.lines().next().unwrap_or("");
        client.login(user, password).await?;
    }
    let send_opts = SendOptions {
        chunking: args.bdat,
        no_pipelining: args.no_pipelining,
        ..SendOptions::default()
    };
    let to: Vec<&str> = args.to.iter().map(String::as_str).collect();
    let refused = if args.from.is_some() && !to.is_empty() {
        let from = args.from.as_deref().unwrap_or_default();
        let len = ringrelay::client::message::normalized_len(&msg);
        client
            .send_chunks(
                from,
                &to,
                std::iter::once(Bytes::from(msg)),
                Some(len),
                &send_opts,
            )
            .await?
    } else {
        let to_opt = (!to.is_empty()).then_some(to.as_slice());
        client
            .send_message(&msg, args.from.as_deref(), to_opt, &send_opts)
            .await?
    };
    let _ = client.quit().await;
    Ok(refused)
}

/// Splits `host:port`, `[v6]:port` or a bare host.
fn split_host_port(s: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_port);
            return (host.to_string(), port);
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default_port)),
        _ => (s.to_string(), default_port),
    }
}
