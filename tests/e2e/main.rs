//! The end-to-end tests, one binary: the HTTP API in-process and gateway
//! processes against a real kube-apiserver and etcd (`testenv`), with a real
//! Alertmanager, OpenTelemetry Collector and Helm where a test says so.
//!
//! One control plane serves the whole binary (`testenv::shared()`), each test
//! in a namespace of its own; tests that stop, restart or hang the API server
//! start a private one. The chaos tests need the `chaos` feature
//! (`cargo test --features chaos --test e2e`, as `hack/test.sh` runs it).

mod alertmanager;
mod chart;
mod control_plane;
mod eks;
mod fence;
mod gateway;
mod image;
mod knative;
mod kubernaut;
mod lambda;
mod otlp;
mod owners;
mod pod;
mod replicas;
mod security;
mod support;
mod tls;
mod wire;
