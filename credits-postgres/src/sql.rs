//! The SQL the store runs. Every statement is prepared once per connection and cached.
//!
//! Multi-row reads and writes take arrays (`unnest`), so one statement serves one tenant or
//! a thousand, and a whole change set is a fixed number of statements sent in one round
//! trip.

use std::sync::LazyLock;

use crate::codec::{ENTRY_COLUMNS, EVENT_COLUMNS, HEADER_COLUMNS};

/// Locks the tenant rows, in ascending tenant order (the lock order of every mutation).
pub(crate) static LOCK_ACCOUNTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {HEADER_COLUMNS}, audit_next_seq, audit_last_hash FROM accounts \
         WHERE tenant = ANY($1::text[]) ORDER BY tenant FOR UPDATE"
    )
});

pub(crate) const LOTS: &str = "SELECT tenant, lot_id, expires_at, priority, remaining \
     FROM credit_lots WHERE tenant = ANY($1::text[])";

pub(crate) const ACTIVE_HOLDS: &str = "SELECT tenant, hold_id, amount, expires_at, draws, \
       owner_tx, owner_branch \
     FROM holds WHERE tenant = ANY($1::text[]) AND state = 'active'";

pub(crate) const RESOLVED_HOLDS: &str = "SELECT h.tenant, h.hold_id, h.state, h.committed, \
       h.owner_tx, h.owner_branch \
     FROM holds h JOIN unnest($1::text[], $2::bigint[]) AS w (tenant, hold_id) \
       ON h.tenant = w.tenant AND h.hold_id = w.hold_id \
     WHERE h.state <> 'active'";

pub(crate) const RECORDS: &str = "SELECT i.tenant, i.key, i.record \
     FROM idempotency_keys i JOIN unnest($1::text[], $2::text[]) AS w (tenant, key) \
       ON i.tenant = w.tenant AND i.key = w.key";

/// Journal entries named by refunds, with what was already refunded of them.
pub(crate) static TARGETS: LazyLock<String> = LazyLock::new(|| {
    let cols = ENTRY_COLUMNS
        .split(", ")
        .map(|c| format!("j.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {cols}, coalesce(r.refunded, 0), h.owner_tx, h.owner_branch \
         FROM journal_entries j JOIN unnest($1::text[], $2::bigint[]) AS w (tenant, seq) \
           ON j.tenant = w.tenant AND j.seq = w.seq \
         LEFT JOIN refunded_entries r ON r.tenant = j.tenant AND r.seq = j.seq \
         LEFT JOIN holds h ON h.tenant = j.tenant AND h.hold_id = j.hold_id"
    )
});

pub(crate) const UPDATE_ACCOUNTS: &str = "UPDATE accounts AS a SET \
       granted = v.granted, refunded = v.refunded, consumed = v.consumed, \
       expired = v.expired, available = v.available, held = v.held, \
       overdrawn = v.overdrawn, next_entry = v.next_entry, next_lot = v.next_lot, \
       next_hold = v.next_hold, last_at = v.last_at, next_deadline = v.next_deadline, \
       audit_next_seq = v.audit_next_seq, audit_last_hash = v.audit_last_hash, \
       status = v.status, next_event = v.next_event \
     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
                 $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], \
                 $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bytea[], \
                 $16::smallint[], $17::bigint[]) \
       AS v (tenant, granted, refunded, consumed, expired, available, held, overdrawn, \
             next_entry, next_lot, next_hold, last_at, next_deadline, audit_next_seq, \
             audit_last_hash, status, next_event) \
     WHERE a.tenant = v.tenant";

pub(crate) const UPSERT_LOTS: &str = "INSERT INTO credit_lots (tenant, lot_id, expires_at, priority, remaining) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[], $5::bigint[]) \
     ON CONFLICT (tenant, lot_id) DO UPDATE SET remaining = EXCLUDED.remaining";

pub(crate) const DELETE_LOTS: &str = "DELETE FROM credit_lots l \
     USING unnest($1::text[], $2::bigint[]) AS w (tenant, lot_id) \
     WHERE l.tenant = w.tenant AND l.lot_id = w.lot_id";

pub(crate) const UPSERT_HOLDS: &str = "INSERT INTO holds (tenant, hold_id, amount, expires_at, state, committed, draws, \
                        owner_tx, owner_branch) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], \
                          $6::bigint[], $7::text[], $8::bigint[], $9::int[]) \
     ON CONFLICT (tenant, hold_id) DO UPDATE \
       SET state = EXCLUDED.state, committed = EXCLUDED.committed, draws = EXCLUDED.draws";

pub(crate) const UPSERT_REFUNDS: &str = "INSERT INTO refunded_entries (tenant, seq, refunded) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
     ON CONFLICT (tenant, seq) DO UPDATE SET refunded = EXCLUDED.refunded";

pub(crate) static INSERT_ENTRIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO journal_entries ({ENTRY_COLUMNS}) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::smallint[], \
             $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
             $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], \
             $15::text[], $16::text[])"
    )
});

pub(crate) const INSERT_RECORDS: &str = "INSERT INTO idempotency_keys (tenant, key, at, record) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])";

/// Sealed audit entries of new journal entries, queued for the sequencer in the same
/// statement (so in the change's transaction). Fails (SQLSTATE CA001, rolling the change
/// back) while the queue is at its limit ($7); the check is an uncorrelated subquery, run
/// once per statement, not per row.
pub(crate) const INSERT_AUDIT: &str = "WITH sealed AS ( \
       INSERT INTO audit_log (stream, stream_seq, journal_seq, at, entry_hash, record) \
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
                            $5::bytea[], $6::bytea[]) \
       WHERE (SELECT audit_backlog_check($7)) \
       RETURNING stream, stream_seq) \
     INSERT INTO audit_pending (stream, stream_seq) \
     SELECT stream, stream_seq FROM sealed ORDER BY stream, stream_seq";

pub(crate) const CREATE_TENANT: &str = "INSERT INTO accounts (tenant, overdraft_limit, last_at, rollover, \
                          thresholds) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant) DO NOTHING";

pub(crate) const DUE_TENANTS: &str = "SELECT tenant FROM accounts \
     WHERE next_deadline <= $1 ORDER BY next_deadline, tenant LIMIT $2";

pub(crate) const BALANCE: &str = "SELECT available, held, overdrawn, next_deadline \
     FROM accounts WHERE tenant = $1";

pub(crate) const BALANCE_AT: &str = "SELECT j.after_available, j.after_held, j.after_overdrawn \
     FROM accounts a LEFT JOIN LATERAL ( \
       SELECT after_available, after_held, after_overdrawn FROM journal_entries \
       WHERE tenant = a.tenant AND at <= $2 ORDER BY seq DESC LIMIT 1) j ON true \
     WHERE a.tenant = $1";

pub(crate) static HISTORY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {ENTRY_COLUMNS} FROM journal_entries \
         WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    )
});

pub(crate) const TENANT_EXISTS: &str = "SELECT 1 FROM accounts WHERE tenant = $1";

pub(crate) const HOLD: &str = "SELECT h.amount, h.expires_at, h.state, h.committed \
     FROM accounts a LEFT JOIN holds h ON h.tenant = a.tenant AND h.hold_id = $2 \
     WHERE a.tenant = $1";

pub(crate) const RECORD: &str = "SELECT i.record \
     FROM accounts a LEFT JOIN idempotency_keys i ON i.tenant = a.tenant AND i.key = $2 \
     WHERE a.tenant = $1";

pub(crate) static TOTALS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {HEADER_COLUMNS}, \
           (SELECT coalesce(sum(remaining), 0)::text FROM credit_lots l WHERE l.tenant = a.tenant), \
           (SELECT coalesce(sum(amount), 0)::text FROM holds h \
              WHERE h.tenant = a.tenant AND h.state = 'active') \
         FROM accounts a WHERE tenant = $1"
    )
});

pub(crate) const TOTALS_ALL: &str = "SELECT \
       coalesce(sum(granted), 0)::text, coalesce(sum(refunded), 0)::text, \
       coalesce(sum(consumed), 0)::text, coalesce(sum(expired), 0)::text, \
       coalesce(sum(available), 0)::text, coalesce(sum(held), 0)::text, \
       coalesce(sum(overdrawn), 0)::text, \
       (SELECT coalesce(sum(remaining), 0)::text FROM credit_lots), \
       (SELECT coalesce(sum(amount), 0)::text FROM holds WHERE state = 'active') \
     FROM accounts";

pub(crate) const AUDIT_STREAM: &str = "SELECT record FROM audit_log \
     WHERE stream = $1 AND stream_seq >= $2 ORDER BY stream_seq LIMIT $3";

/// Session advisory locks on every tenant of a change (serializable mode), in the order of
/// the array (ascending tenant order: the same global order for every change, so two
/// changes never deadlock), all in one statement: it returns only once every lock is held,
/// so a `BEGIN` pipelined after it takes its snapshot after the previous holders committed.
/// Released by `pg_advisory_unlock_all()` after the transaction ends.
pub(crate) const ADVISORY_LOCKS: &str = "SELECT count(pg_advisory_lock(hashtextextended(t, 0))) \
     FROM unnest($1::text[]) AS u(t)";

/// Active holds owned by transaction branches, in branch order, after ($1, $2).
pub(crate) const PREPARED_HOLDS: &str = "SELECT tenant, hold_id, amount, owner_tx, owner_branch \
     FROM holds \
     WHERE state = 'active' AND owner_tx IS NOT NULL \
       AND (owner_tx, owner_branch) > ($1::bigint, $2::int) \
     ORDER BY owner_tx, owner_branch LIMIT $3";

/// Forgets idempotency records applied before $1 (ms).
pub(crate) const FORGET_KEYS: &str = "DELETE FROM idempotency_keys WHERE at < $1";

/// Balance events emitted by a change, inserted in its transaction.
pub(crate) const INSERT_EVENTS: &str = "INSERT INTO balance_events \
       (tenant, seq, at, threshold, entry_seq, available) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
                          $6::bigint[])";

/// A page of a tenant's events after $2 (at most $3 rows).
pub(crate) static EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {EVENT_COLUMNS} FROM balance_events \
         WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    )
});

/// A tenant's delivery cursor (0: nothing delivered).
pub(crate) const EVENT_CURSOR: &str = "SELECT events_delivered FROM accounts WHERE tenant = $1";

/// Moves a tenant's delivery cursor forward to $2, never backward and never past its last
/// event. Returns the row (none: unknown tenant).
pub(crate) const ADVANCE_EVENT_CURSOR: &str = "UPDATE accounts \
     SET events_delivered = greatest(events_delivered, least($2, next_event - 1)) \
     WHERE tenant = $1 RETURNING events_delivered";

/// Tenants with undelivered events, after $1, at most $2.
pub(crate) const PENDING_EVENT_TENANTS: &str = "SELECT tenant FROM accounts \
     WHERE events_delivered < next_event - 1 AND tenant > $1 ORDER BY tenant LIMIT $2";
