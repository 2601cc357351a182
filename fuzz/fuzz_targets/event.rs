//! Fuzzes the Kubernetes Event decoder: it never panics, its error messages stay short, and
//! a signal it makes has a valid fingerprint and RR name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signal_gateway::signal::{Item, ParseContext, parse_event};

mod check;

fuzz_target!(|data: &[u8]| {
    match parse_event(data, &ParseContext::now(None)) {
        Ok(Item::Signal(s)) => check::names(s.fingerprint.as_str()),
        Ok(Item::Rejected { reason }) => check::short(&reason),
        Ok(Item::Ignored { .. }) => {}
        Err(e) => check::short(&e.to_string()),
    }
});
