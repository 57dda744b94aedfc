//! Operating a running job from outside: its HTTP endpoint (metrics, the
//! REST API, a stop), above the runtime it observes.

pub mod access;
pub mod http;
