//! Domain state the handlers share: the experiment and rollout registries (in PostgreSQL
//! when the service has a database, in memory otherwise). They hold state and its limits; the HTTP shapes stay in [`routes`](crate::routes), which depend on
//! these modules and never the other way round.

pub(crate) mod experiments;
pub(crate) mod rollouts;

pub(crate) use experiments::Experiments;
pub(crate) use rollouts::Rollouts;
