//! Umbra's integration tests: one test crate (one link step) driving the
//! controller over real TLS on loopback, and the real `umbra` binary.
//!
//! Users, devices and sessions are created through the public API only.
//! TOTP codes come from the stock `oathtool`, as a user's authenticator
//! would produce them.

mod support;

mod access;
mod admin_api;
mod audit;
mod browser;
mod browser_nginx;
mod cli;
mod continuous;
mod dark;
mod dark_controller;
mod dashboard;
mod detection;
mod e2e;
mod enrollment;
mod forward_auth;
mod forward_auth_nginx;
mod login;
mod metrics;
mod multi_controller;
mod policy_access;
mod policy_api;
mod rule_tests;
mod spa;
mod tokens;
