//! signal-gateway turns alert signals into exactly one active `RemediationRequest` per
//! problem, across any number of replicas.
//!
//! Data flows one way: `web` (HTTP adapter) -> `signal` (the model, its own crate in
//! `crates/signal`, which knows no Kubernetes client or CRD) -> `pipeline` (coalesce,
//! count or create) -> `k8s` (every Kubernetes call, the fence record and its lock).
//! `crd` holds the resource types, `audit` the audit events of each decision, `app` wires
//! the parts and `lambda` serves them as an AWS Lambda function; `main.rs` only picks a mode.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod app;
pub mod audit;
pub(crate) mod chaos;
pub mod config;
pub mod crd;
pub mod k8s;
pub(crate) mod lambda;
pub mod pipeline;
pub use signal_gateway_signal as signal;
pub mod telemetry;
pub(crate) mod web;
