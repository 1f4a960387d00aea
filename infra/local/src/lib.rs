//! The local runner's pieces, as a library so tests drive them directly.

pub mod auth;
pub mod backend;
pub mod demo;
pub mod esm;
pub mod operate;
pub mod runner;
pub mod server;
pub mod subscribers;
pub mod system;
pub mod text;
pub mod ui;
