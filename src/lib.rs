//! signal-gateway turns alert signals into exactly one active
//! `RemediationRequest` per problem, across any number of replicas.
//!
//! Data flows one way: `http` (adapter) -> `signal` (model) -> `pipeline`
//! (coalesce, dedup, `lock`, write) -> Kubernetes.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod api;
pub mod apicall;
pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod lock;
pub mod pipeline;
pub mod serve;
pub mod signal;
pub mod telemetry;
pub mod testhook;
