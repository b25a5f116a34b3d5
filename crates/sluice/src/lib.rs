//! The Sluice binary's library half: configuration loading and wiring, kept apart from `main` so that
//! integration tests assemble exactly the gateway the binary runs.

pub mod alerting;
pub mod config;
pub mod exposure;
pub mod wiring;

pub use config::{Config, ConfigError};
pub use wiring::{Gateway, app, build};
