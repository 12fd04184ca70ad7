//! Domain state the handlers share: the experiment and rollout registries (in PostgreSQL
//! when the service has a database, in memory otherwise) and the grant keys' metadata
//! digests. They hold state and its limits; the HTTP shapes stay in [`routes`](crate::routes), which depend on
//! these modules and never the other way round.

pub(crate) mod experiments;
pub(crate) mod grants;
pub(crate) mod rollouts;

pub(crate) use experiments::Experiments;
pub(crate) use grants::GrantKeys;
pub(crate) use rollouts::Rollouts;
