#![allow(dead_code)]
pub mod postfix;
pub mod smtp;
