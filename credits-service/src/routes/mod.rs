//! HTTP handlers, one module per area.

pub(crate) mod audit;
pub(crate) mod checks;
pub(crate) mod credits;
pub(crate) mod experiments;
pub(crate) mod lifecycle;
pub(crate) mod ops;
pub(crate) mod rollouts;
