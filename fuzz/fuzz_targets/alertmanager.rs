//! Fuzzes the Alertmanager decoder: it never panics, its error messages stay short, every
//! signal it makes has a valid fingerprint, RR name and RR fields, and the replay check only
//! ever refuses a whole notification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signal::{Item, ParseContext, REPLAY_WINDOW_DEFAULT, parse_alertmanager};

mod check;

fuzz_target!(|data: &[u8]| {
    let ctx = ParseContext::now(Some("fuzz".into()));
    let unchecked = parse_alertmanager(data, &ctx);
    match &unchecked {
        Ok(items) => {
            assert!(items.len() <= ctx.max_alerts);
            for item in items {
                match item {
                    Item::Signal(s) => check::signal(s),
                    Item::Rejected { reason } => check::short(reason),
                    Item::Ignored { .. } => {}
                }
            }
        }
        Err(e) => check::short(&e.to_string()),
    }
    let checked = ParseContext {
        replay_window: Some(REPLAY_WINDOW_DEFAULT),
        // Odd first bytes send an `X-Timestamp` header of some value, even ones none.
        timestamp_header: data
            .first()
            .filter(|b| *b % 2 == 1)
            .map(|b| (i64::from(*b) * 7_919_999).to_string()),
        ..ctx.clone()
    };
    match parse_alertmanager(data, &checked) {
        Ok(items) => assert_eq!(
            items.len(),
            unchecked.as_ref().map_or(usize::MAX, Vec::len),
            "the replay check changed the items it let through"
        ),
        Err(e) => check::short(&e.to_string()),
    }
});
