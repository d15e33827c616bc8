//! greyspf: a Postfix SMTPD access-policy service (greylisting and SPF) as a library, so the
//! binary, the tests, the benchmarks and the fuzz targets share one implementation.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod date;
pub mod dns;
pub mod greylist;
pub mod logging;
pub mod net;
pub mod pattern;
pub mod policy;
pub mod protocol;
pub mod score;
pub mod server;
pub mod spf;
pub mod store;

/// The version reported in headers, logs and the keeper handshake.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
