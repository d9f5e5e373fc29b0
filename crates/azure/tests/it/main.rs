//! Integration tests of the ARM client: against `kombiform-arm-standin` started in-process
//! on loopback (polling styles, paging, throttling, faults, errors, credentials, ARM's
//! quirks), and against replays of real recorded ARM traffic.

mod replay;
mod standin;
mod support;
