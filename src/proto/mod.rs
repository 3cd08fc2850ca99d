//! The sans-IO SMTP protocol core: command parser, reply builder, address syntax, DATA/BDAT
//! scanner, the server `Session` state machine, and the PROXY protocol header a load
//! balancer sends before the session.
//!
//! Nothing in here touches a socket, a thread, a runtime or a clock: time is always an argument
//! and bytes are always handed in. That makes every behaviour testable in memory with a virtual
//! clock, and lets the same core run under the io_uring driver, the epoll driver and the fuzzer.

pub mod address;
pub mod command;
pub mod config;
pub mod data;
pub mod envelope;
pub mod event;
pub mod proxy_header;
pub mod reply;
pub mod session;

pub use address::{AddressError, Mailbox, ReversePath};
pub use command::{parse_command, Command, CommandError, Verb};
pub use config::{BareLineEndings, ExpnPolicy, Extensions, SessionConfig};
pub use data::DataChunk;
pub use envelope::{BodyType, Envelope};
pub use event::{Event, Observation};
pub use reply::{EnhancedCode, Reply};
pub use session::{
    ClientLabel, CommandHook, Credentials, PendingCommand, Session, State, LOCAL_PEER,
};
