//! signal-gateway turns alert signals into exactly one active
//! `RemediationRequest` per problem, across any number of replicas.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod api;
pub mod signal;
