//! Fuzzes the Alertmanager decoder: it never panics, its error messages stay short, and
//! every signal it makes has a valid fingerprint and RR name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signal_gateway::signal::{Item, ParseContext, parse_alertmanager};

mod check;

fuzz_target!(|data: &[u8]| {
    let ctx = ParseContext::now(Some("fuzz".into()));
    match parse_alertmanager(data, &ctx) {
        Ok(items) => {
            assert!(items.len() <= ctx.max_alerts);
            for item in items {
                match item {
                    Item::Signal(s) => check::names(s.fingerprint.as_str()),
                    Item::Rejected { reason } => check::short(&reason),
                    Item::Ignored { .. } => {}
                }
            }
        }
        Err(e) => check::short(&e.to_string()),
    }
});
