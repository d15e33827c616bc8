#![allow(dead_code)]
pub mod dns;
pub mod postfix;
pub mod redis_server;
pub mod smtp;
