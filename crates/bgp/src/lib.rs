//! BGP-4 as pure functions and state machines: nothing here opens a socket, reads a clock
//! or spawns a task, so every byte and every decision can be tested on its own.
//!
//! - [`types`]: the shared vocabulary (families, prefixes, path attributes);
//! - [`wire`]: messages to and from bytes (RFC 4271, 4760, 6793, 5492, 2918, 4724, 7911,
//!   1997, 8092, 4456), with RFC 7606's error handling;
//! - [`fsm`]: the RFC 4271 session state machine, driven by events, answering with actions;
//! - [`rib`]: Adj-RIB-In, the decision process (RFC 4271 §9.1.2.2 and RFC 4456) with the
//!   reason each losing path lost, and what to advertise to whom.

pub mod fsm;
#[doc(hidden)]
pub mod fuzzing;
pub mod rib;
pub mod types;
pub mod wire;
