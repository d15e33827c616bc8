#![allow(dead_code)]
pub mod dns;
pub mod postfix;
pub mod smtp;
