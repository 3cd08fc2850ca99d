//! `ringrelay send`: the one-shot client. Reads a message from a file or stdin, or builds one
//! from `--header`/`--body` (`send_compose`), and sends it; exit 0 when at least one
//! recipient accepted it, 1 with the server's reply otherwise.

use std::io::{IsTerminal, Read};
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
    /// Server as HOST:PORT (default 127.0.0.1:25, or 24 with --lmtp), or unix:PATH.
    #[arg(long, value_name = "HOST:PORT|unix:PATH")]
    pub server: Option<String>,
    /// Connect to the server on this Unix-domain socket instead of TCP (SMTP, or LMTP with
    /// --lmtp); --server unix:PATH says the same.
    #[arg(long, value_name = "PATH", conflicts_with = "server")]
    pub unix: Option<PathBuf>,
    /// Envelope sender (default: From/Sender of the message, as smtplib's send_message); a
    /// display name is dropped as smtplib does ("Jane <jane@example.com>").
    #[arg(long, value_name = "ADDR")]
    pub from: Option<String>,
    /// Envelope recipient; repeat for several (default: To/Cc/Bcc of the message); a display
    /// name is dropped as smtplib does.
    #[arg(long, value_name = "ADDR")]
    pub to: Vec<String>,
    /// Build the message instead of reading one: add this header line ("Name: value");
    /// repeat for several. From, To, Date and Subject are added where not given.
    #[arg(long, value_name = "NAME: VALUE", conflicts_with = "file")]
    pub header: Vec<String>,
    /// Build the message instead of reading one, with this body text (swaks' --body).
    #[arg(long, value_name = "TEXT", conflicts_with = "file")]
    pub body: Option<String>,
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
    /// Message file (default: stdin, unless --header or --body builds the message).
    pub file: Option<PathBuf>,
}

/// Why `send` could not send.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A file named on the command line could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file (the message, the password file).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Standard input could not be read.
    #[error("cannot read the message from stdin: {0}")]
    Stdin(std::io::Error),
    /// --header / --body could not make a message.
    #[error(transparent)]
    Compose(#[from] crate::send_compose::ComposeError),
    /// The SMTP exchange failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn read_file(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, SendError> {
    std::fs::read(path).map_err(|source| SendError::Read {
        what,
        path: path.clone(),
        source,
    })
}

/// The message: built from --header/--body, read from the file, or from stdin.
fn message(args: &SendArgs, from: Option<&str>, to: &[String]) -> Result<Vec<u8>, SendError> {
    if !args.header.is_empty() || args.body.is_some() {
        let body = args.body.as_deref().unwrap_or("");
        return Ok(crate::send_compose::compose(&args.header, body, from, to)?);
    }
    if let Some(path) = &args.file {
        return read_file("the message file", path);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "ringrelay send: reading the message from stdin (end it with Ctrl-D; or give a \
             FILE, or --header/--body)"
        );
    }
    let mut msg = Vec::new();
    stdin
        .lock()
        .read_to_end(&mut msg)
        .map_err(SendError::Stdin)?;
    Ok(msg)
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

async fn send(args: SendArgs) -> Result<ringrelay::client::Refused, SendError> {
    let from = args.from.as_deref().map(crate::send_compose::mailbox);
    let to: Vec<String> = args
        .to
        .iter()
        .map(|a| crate::send_compose::mailbox(a))
        .collect();
    // A built message names the addresses as given (display names included).
    let msg = message(&args, args.from.as_deref(), &args.to)?;
    let password = match (&args.auth_user, &args.auth_password_file) {
        (Some(_), Some(file)) => {
            let text = read_file("the password file", file)?;
            let text = String::from_utf8_lossy(&text).into_owned();
            Some(text.lines().next().unwrap_or("").to_string())
        }
        _ => None,
    };
    let tls = TlsOptions {
        ca_file: args.tls_ca.clone(),
        insecure: args.tls_insecure,
        flag_names: TlsFlagNames::SEND,
        ..Default::default()
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
    let unix = args.unix.clone().or_else(|| {
        args.server
            .as_deref()
            .and_then(|s| s.strip_prefix("unix:"))
            .map(PathBuf::from)
    });
    let mut client = match &unix {
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
    if let (Some(user), Some(password)) = (&args.auth_user, &password) {
        client.login(user, password).await?;
    }
    let send_opts = SendOptions {
        chunking: args.bdat,
        no_pipelining: args.no_pipelining,
        ..SendOptions::default()
    };
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let refused = if let (Some(from), false) = (from.as_deref(), to.is_empty()) {
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
            .send_message(&msg, from.as_deref(), to_opt, &send_opts)
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
