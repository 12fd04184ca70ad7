//! Balance thresholds and their events: [`BalanceThresholds`] (a tenant setting),
//! [`BalanceEvent`] (what a downward crossing emits, durable with the change that caused it),
//! and delivery to a host's [`EventSink`] through [`EventDispatcher`].
//!
//! An event is computed by the pure rules ([`Account`](crate::backend::Account)) from the
//! balances before and after each journal entry: a threshold `t` fires when the entry takes
//! `available` from `≥ t` to `< t`. Crossing back up re-arms it without an event, so it fires
//! exactly once per downward crossing whatever the order of consumes, refunds, grants,
//! expiries, rollovers and voids. Nothing is kept in a cache: the "armed" state is the
//! balance itself. Events are part of the change set ([`Applied`](crate::backend::Applied)),
//! persisted in the same atomic step as the entry that crossed, and numbered per tenant
//! ([`EventSeq`]: 1, 2, 3, … without gaps).

use std::fmt;

use async_trait::async_trait;
use metered_clock::Timestamp;
use serde::{Deserialize, Serialize};

use crate::store::{LedgerStore, PAGE_LEN_MAX};
use crate::{Amount, EntrySeq, EventSeq, LedgerError, TenantId};

/// The most thresholds a tenant may set.
pub const THRESHOLDS_MAX: usize = 8;

/// A tenant's balance thresholds: up to [`THRESHOLDS_MAX`] distinct, non-zero amounts of
/// available credits, kept sorted (ascending). `Copy`: a fixed-size array, no allocation.
///
/// ```
/// use credits_core::{Amount, BalanceThresholds};
///
/// let t = BalanceThresholds::new([Amount::new(500), Amount::new(100)])?;
/// assert_eq!(t.as_slice(), &[Amount::new(100), Amount::new(500)]);
/// // From 600 to 50 crosses both (ascending order).
/// let crossed: Vec<Amount> = t.crossed(Amount::new(600), Amount::new(50)).collect();
/// assert_eq!(crossed, [Amount::new(100), Amount::new(500)]);
/// // Staying below, or going up, crosses nothing.
/// assert_eq!(t.crossed(Amount::new(90), Amount::new(10)).count(), 0);
/// assert_eq!(t.crossed(Amount::new(10), Amount::new(900)).count(), 0);
///
/// assert!(BalanceThresholds::new([Amount::ZERO]).is_err()); // never crossed
/// assert!(BalanceThresholds::new([Amount::new(5), Amount::new(5)]).is_err());
/// assert!(BalanceThresholds::new((1..=9).map(Amount::new)).is_err()); // too many
/// # Ok::<(), credits_core::LedgerError>(())
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<Amount>", into = "Vec<Amount>")]
pub struct BalanceThresholds {
    amounts: [Amount; THRESHOLDS_MAX],
    len: u8,
}

impl BalanceThresholds {
    /// No thresholds (the default): no events.
    pub const NONE: BalanceThresholds = BalanceThresholds {
        amounts: [Amount::ZERO; THRESHOLDS_MAX],
        len: 0,
    };

    /// Thresholds at these amounts of available credits, in any order.
    ///
    /// # Errors
    /// [`LedgerError::InvalidThresholds`] for more than [`THRESHOLDS_MAX`] amounts, a zero
    /// amount (available credits never go below zero, so it could never fire: use 1 to
    /// hear when a tenant runs dry) or the same amount twice.
    pub fn new(amounts: impl IntoIterator<Item = Amount>) -> Result<Self, LedgerError> {
        let invalid = |reason: &str| {
            Err(LedgerError::InvalidThresholds {
                reason: reason.to_owned(),
            })
        };
        let mut out = BalanceThresholds::NONE;
        for a in amounts {
            if usize::from(out.len) == THRESHOLDS_MAX {
                return invalid("at most 8 thresholds");
            }
            if a.is_zero() {
                return invalid("a threshold must not be zero");
            }
            out.amounts[usize::from(out.len)] = a;
            out.len += 1;
        }
        let set = &mut out.amounts[..usize::from(out.len)];
        set.sort_unstable();
        if set.windows(2).any(|w| w[0] == w[1]) {
            return invalid("the thresholds must be distinct");
        }
        Ok(out)
    }

    /// The thresholds, ascending.
    #[must_use]
    pub fn as_slice(&self) -> &[Amount] {
        &self.amounts[..usize::from(self.len)]
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The thresholds a change from `before` to `after` available credits crosses
    /// downward (`before ≥ t > after`), ascending.
    pub fn crossed(&self, before: Amount, after: Amount) -> impl Iterator<Item = Amount> + '_ {
        self.as_slice()
            .iter()
            .copied()
            .filter(move |t| before >= *t && after < *t)
    }
}

impl fmt::Debug for BalanceThresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl TryFrom<Vec<Amount>> for BalanceThresholds {
    type Error = LedgerError;
    fn try_from(v: Vec<Amount>) -> Result<Self, LedgerError> {
        BalanceThresholds::new(v)
    }
}

impl From<BalanceThresholds> for Vec<Amount> {
    fn from(t: BalanceThresholds) -> Self {
        t.as_slice().to_vec()
    }
}

/// A tenant's available credits crossed one of its [`BalanceThresholds`] downward.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceEvent {
    /// Whose balance.
    pub tenant: TenantId,
    /// Its position in the tenant's outbox (1, 2, 3, … without gaps).
    pub seq: EventSeq,
    /// When (the crossing entry's time).
    pub at: Timestamp,
    /// The threshold crossed.
    pub threshold: Amount,
    /// The journal entry that crossed it.
    pub entry: EntrySeq,
    /// Available credits right after that entry (below `threshold`).
    pub available: Amount,
}

/// One page of a tenant's events, oldest first ([`LedgerStore::events`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events.
    pub events: Vec<BalanceEvent>,
    /// Pass as `after` to get the next page; `None` when this is the last.
    pub next: Option<EventSeq>,
}

/// Why a sink did not take a batch of events: they stay pending and are offered again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event sink failed: {reason}")]
pub struct EventSinkError {
    /// What went wrong, for logs.
    pub reason: String,
}

impl EventSinkError {
    /// A failure with its reason.
    #[must_use]
    pub fn new(reason: impl Into<String>) -> Self {
        EventSinkError {
            reason: reason.into(),
        }
    }
}

/// Where the host wants balance events delivered (a queue, a webhook sender, …).
///
/// Delivery is at least once, in order per tenant: a batch the sink failed (or that was
/// delivered but whose cursor update then failed) is offered again, so a sink must
/// tolerate a repeat, for example by remembering the last [`BalanceEvent::seq`] per tenant.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Takes a non-empty batch of one tenant's events, in order. Return `Ok` only once
    /// they are safely handed over.
    ///
    /// # Errors
    /// Any failure: the batch stays pending.
    async fn deliver(&self, events: &[BalanceEvent]) -> Result<(), EventSinkError>;
}

/// What one [`EventDispatcher::deliver`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Events the sink took (and the cursor moved past).
    pub delivered: u64,
    /// The delivery cursor afterwards: the last event delivered (`None`: none yet).
    pub cursor: Option<EventSeq>,
    /// The sink's failure, if it failed (the rest stays pending for the next call).
    pub failed: Option<EventSinkError>,
    /// Whether events may remain pending (the page budget ran out).
    pub more: bool,
}

/// Hands a tenant's pending events to an [`EventSink`], in order, after the tenant's
/// durably stored delivery cursor ([`LedgerStore::event_cursor`]), and moves the cursor only
/// after the sink took a batch. Stateless: the cursor lives in the store, so any process
/// (or a restarted one) continues where the last left off; a failing sink delays delivery
/// and never loses, reorders or skips an event.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct EventDispatcher {
    batch_len_max: usize,
    batches_max: usize,
}

impl Default for EventDispatcher {
    fn default() -> Self {
        EventDispatcher {
            batch_len_max: 100,
            batches_max: 10,
        }
    }
}

impl EventDispatcher {
    /// At most `batch_len_max` events per sink call (1 to `PAGE_LEN_MAX`) and
    /// `batches_max` sink calls per tenant and [`deliver`](Self::deliver) call (at least 1).
    pub fn new(batch_len_max: usize, batches_max: usize) -> Self {
        EventDispatcher {
            batch_len_max: batch_len_max.clamp(1, PAGE_LEN_MAX),
            batches_max: batches_max.max(1),
        }
    }

    /// Delivers `tenant`'s pending events to `sink`, in order, batch by batch; stops at the
    /// first failing batch (reported in [`DeliveryReport::failed`], not as an error).
    ///
    /// # Errors
    /// [`LedgerError::UnknownTenant`]; storage failures (the cursor stays where the last
    /// successful update left it).
    pub async fn deliver(
        &self,
        store: &(impl LedgerStore + ?Sized),
        tenant: &TenantId,
        sink: &(impl EventSink + ?Sized),
    ) -> Result<DeliveryReport, LedgerError> {
        let mut report = DeliveryReport {
            cursor: store.event_cursor(tenant).await?,
            ..DeliveryReport::default()
        };
        for _ in 0..self.batches_max {
            let page = store
                .events(tenant, report.cursor, self.batch_len_max)
                .await?;
            let Some(last) = page.events.last().map(|e| e.seq) else {
                return Ok(report);
            };
            if let Err(e) = sink.deliver(&page.events).await {
                report.failed = Some(e);
                report.more = true;
                return Ok(report);
            }
            store.advance_event_cursor(tenant, last).await?;
            report.delivered += page.events.len() as u64;
            report.cursor = Some(last);
            if page.next.is_none() {
                return Ok(report);
            }
        }
        report.more = true;
        Ok(report)
    }

    /// Delivers the pending events of up to `tenants_max` tenants that have some
    /// ([`LedgerStore::tenants_with_pending_events`]), tenant by tenant; a failing sink for
    /// one tenant does not stop the others. Returns each tenant's report.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn deliver_pending(
        &self,
        store: &(impl LedgerStore + ?Sized),
        sink: &(impl EventSink + ?Sized),
        tenants_max: usize,
    ) -> Result<Vec<(TenantId, DeliveryReport)>, LedgerError> {
        let tenants = store
            .tenants_with_pending_events(None, tenants_max.clamp(1, PAGE_LEN_MAX))
            .await?;
        let mut out = Vec::with_capacity(tenants.len());
        for t in tenants {
            let report = self.deliver(store, &t, sink).await?;
            out.push((t, report));
        }
        Ok(out)
    }
}
