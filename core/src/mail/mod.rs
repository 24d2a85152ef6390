//! Mail on the control core: the durable queue (`queue`, the intake side) and delivery of
//! what is queued ([`delivery`]).

pub mod delivery;
pub mod template;
