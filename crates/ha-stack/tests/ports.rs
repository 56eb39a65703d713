//! The stack's ports: all derived from one base, distinct, within a span of 22.
#![cfg(unix)] // the HA harness is unix-only
#![allow(clippy::unwrap_used)]

use counseling_ha::{NODES, Ports};

#[test]
fn ports_are_distinct_and_within_the_span() {
    let ports = Ports::new(40_000).unwrap();
    let mut all = ports.all();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 4 + 2 * NODES);
    assert!(all.iter().all(|&port| (40_000..=40_021).contains(&port)));
    assert_eq!(ports.primary(), 40_000);
}

#[test]
fn a_base_too_close_to_the_top_is_refused() {
    assert!(Ports::new(u16::MAX - 20).is_err());
    assert!(Ports::new(80).is_err());
    assert!(Ports::new(u16::MAX - 21).is_ok());
}
