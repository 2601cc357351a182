//! Fuzzes the Kubernetes Event decoder: it never panics, its error messages stay short, and
//! a signal it makes has a valid fingerprint, RR name and RR fields, with or without the
//! freshness check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signal::{Item, ParseContext, REPLAY_WINDOW_DEFAULT, parse_event};

mod check;

fuzz_target!(|data: &[u8]| {
    let off = ParseContext::now(None);
    let on = ParseContext {
        replay_window: Some(REPLAY_WINDOW_DEFAULT),
        ..off.clone()
    };
    for ctx in [off, on] {
        match parse_event(data, &ctx) {
            Ok(Item::Signal(s)) => check::signal(&s),
            Ok(Item::Rejected { reason }) => check::short(&reason),
            Ok(Item::Ignored { .. }) => {}
            Err(e) => check::short(&e.to_string()),
        }
    }
});
