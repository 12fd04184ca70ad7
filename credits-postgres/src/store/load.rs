//! Reading the tenants a transaction touches: lock their rows and load, in one round trip,
//! what the operations need — the `accounts` row, the live lots and active holds
//! (together an [`AccountParts`]), the records of the keys used, any resolved hold a
//! command names and any journal entry a refund names.

use std::collections::BTreeMap;

use audit_chain::StreamHead;
use credits_core::backend::{AccountParts, Hold, Lot, LotKey};
use credits_core::{HoldId, IdempotencyKey, IdempotencyRecord, JournalEntry, LotId, TenantId};
use hashbrown::HashMap;
use metered_clock::Timestamp;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::PgLedgerStore;
use super::transaction::Op;
use super::work::Work;
use crate::pool::TxConn;
use crate::{Isolation, PgError, codec, sql};

/// What the operations name, as the array parameters of the load statements.
#[derive(Default)]
struct Lookups<'a> {
    /// Every tenant, ascending (the lock order), once.
    tenants: Vec<&'a str>,
    /// Holds commands resolve: (tenant, hold id).
    holds: (Vec<&'a str>, Vec<i64>),
    /// Journal entries refunds name: (tenant, seq).
    targets: (Vec<&'a str>, Vec<i64>),
    /// Idempotency keys: (tenant, key).
    keys: (Vec<&'a str>, Vec<&'a str>),
}

impl<'a> Lookups<'a> {
    fn of(ops: &'a [Op<'a>]) -> Self {
        let mut l = Lookups {
            tenants: ops.iter().map(|o| o.tenant().as_str()).collect(),
            ..Lookups::default()
        };
        l.tenants.sort_unstable();
        l.tenants.dedup();
        for op in ops {
            let Op::Apply(r) = op else { continue };
            let tenant = r.tenant.as_str();
            l.keys.0.push(tenant);
            l.keys.1.push(r.key.as_str());
            // An id beyond bigint cannot be stored, so it is not looked up: the rules
            // answer "unknown".
            if let Some(h) = r.command.hold()
                && let Ok(h) = i64::try_from(h.get())
            {
                l.holds.0.push(tenant);
                l.holds.1.push(h);
            }
            if let Some(seq) = r.command.refers_to()
                && let Ok(seq) = i64::try_from(seq.get())
            {
                l.targets.0.push(tenant);
                l.targets.1.push(seq);
            }
        }
        l
    }
}

/// The rows the load statements returned.
struct Loaded {
    accounts: Vec<Row>,
    lots: Vec<Row>,
    holds: Vec<Row>,
    resolved: Vec<Row>,
    records: Vec<Row>,
    targets: Vec<Row>,
}

/// A tenant being rebuilt: its parts and its audit chain head, by tenant name.
type Tenants = BTreeMap<String, (AccountParts, StreamHead)>;

impl PgLedgerStore {
    /// Locks the tenants and loads what the operations need, in one round trip.
    pub(super) async fn load(
        &self,
        conn: &TxConn,
        ops: &[Op<'_>],
    ) -> Result<BTreeMap<TenantId, Work>, PgError> {
        let lookups = Lookups::of(ops);
        let rows = self.fetch(conn, &lookups).await?;
        let mut tenants = Tenants::new();
        for row in &rows.accounts {
            let (name, parts, head) = account(row)?;
            tenants.insert(name, (parts, head));
        }
        add_lots(&mut tenants, &rows.lots)?;
        add_holds(&mut tenants, &rows.holds)?;
        add_resolved(&mut tenants, &rows.resolved)?;
        let mut targets = add_targets(&mut tenants, &rows.targets)?;
        let mut known = records(&rows.records)?;
        let mut works = BTreeMap::new();
        for (name, (parts, head)) in tenants {
            let tenant = parts.header.tenant.clone();
            let work = Work::new(
                parts,
                head,
                known.remove(&name).unwrap_or_default(),
                targets.remove(&name).unwrap_or_default(),
            )?;
            works.insert(tenant, work);
        }
        Ok(works)
    }

    /// `BEGIN`, the row locks and every read, pipelined: every statement is sent before the
    /// first answer is awaited. They run in order, so the reads after the lock see the
    /// latest committed state.
    async fn fetch(&self, conn: &TxConn, l: &Lookups<'_>) -> Result<Loaded, PgError> {
        let c = conn.client();
        let s_lock = c.prepare_cached(&sql::LOCK_ACCOUNTS).await?;
        let s_lots = c.prepare_cached(sql::LOTS).await?;
        let s_holds = c.prepare_cached(sql::ACTIVE_HOLDS).await?;
        let s_resolved = c.prepare_cached(sql::RESOLVED_HOLDS).await?;
        let s_records = c.prepare_cached(sql::RECORDS).await?;
        let s_targets = c.prepare_cached(&sql::TARGETS).await?;
        let by_tenant: [&(dyn ToSql + Sync); 1] = [&l.tenants];
        let by_hold: [&(dyn ToSql + Sync); 2] = [&l.holds.0, &l.holds.1];
        let by_key: [&(dyn ToSql + Sync); 2] = [&l.keys.0, &l.keys.1];
        let by_target: [&(dyn ToSql + Sync); 2] = [&l.targets.0, &l.targets.1];
        // Under SERIALIZABLE, a row lock waited for inside the transaction fails with 40001
        // once the holder commits (the row changed after our snapshot). So every tenant is
        // first locked with a session advisory lock, in ascending tenant order, in one
        // statement outside the transaction (its own implicit transaction): the `BEGIN`
        // pipelined behind it runs, and takes its snapshot, only once every lock is held
        // and the previous holders committed. They are released after COMMIT or ROLLBACK
        // (or with the connection).
        let s_advisory = if self.db.isolation == Isolation::Serializable {
            Some(c.prepare_cached(sql::ADVISORY_LOCKS).await?)
        } else {
            None
        };
        let advisory = async {
            if let Some(st) = &s_advisory {
                c.query_one(st, &by_tenant).await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        };
        // Under SERIALIZABLE the idempotency records are read once the advisory locks are
        // held but before the snapshot: a tenant's record is only written under its lock,
        // and a record written by anyone else meanwhile would make this transaction's
        // insert of the same key fail on the primary key, never apply twice. Read inside
        // the snapshot, every lookup would take a predicate lock on an index page that
        // other tenants' new keys go into: a serialization failure between transactions
        // that share no tenant.
        let early = s_advisory.is_some();
        let no_keys = l.keys.0.is_empty();
        let (_, records_early, _, accounts, lots, holds, resolved, records, targets) = futures::try_join!(
            advisory,
            query_unless(c, &s_records, &by_key, no_keys || !early),
            c.batch_execute(self.db.isolation.begin_sql()),
            c.query(&s_lock, &by_tenant),
            c.query(&s_lots, &by_tenant),
            c.query(&s_holds, &by_tenant),
            query_unless(c, &s_resolved, &by_hold, l.holds.0.is_empty()),
            query_unless(c, &s_records, &by_key, no_keys || early),
            query_unless(c, &s_targets, &by_target, l.targets.0.is_empty()),
        )?;
        let records = if early { records_early } else { records };
        Ok(Loaded {
            accounts,
            lots,
            holds,
            resolved,
            records,
            targets,
        })
    }
}

/// Runs `statement` unless there is nothing to look up.
async fn query_unless(
    c: &Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    nothing: bool,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    if nothing {
        Ok(Vec::new())
    } else {
        c.query(statement, params).await
    }
}

/// A locked `accounts` row: the tenant's name, its parts (no lots or holds yet) and its
/// audit chain head.
fn account(row: &Row) -> Result<(String, AccountParts, StreamHead), PgError> {
    let header = codec::header(row)?;
    let hash: &[u8] = row.get(codec::HEADER_LEN + 1);
    let head = StreamHead {
        next_seq: codec::u(row.get(codec::HEADER_LEN), "audit_next_seq")?,
        last_hash: hash
            .try_into()
            .map_err(|_| PgError::corrupt("audit_last_hash is not 32 bytes"))?,
    };
    let name = header.tenant.as_str().to_owned();
    let parts = AccountParts {
        header,
        lots: Vec::new(),
        holds: Vec::new(),
        resolved: Vec::new(),
        owners: Vec::new(),
        refunded: Vec::new(),
    };
    Ok((name, parts, head))
}

/// The parts of `tenant`, which must have been locked.
fn slot<'a>(tenants: &'a mut Tenants, tenant: &str) -> Result<&'a mut AccountParts, PgError> {
    tenants
        .get_mut(tenant)
        .map(|(p, _)| p)
        .ok_or_else(|| PgError::corrupt(format_args!("row of unlocked tenant {tenant}")))
}

fn add_lots(tenants: &mut Tenants, rows: &[Row]) -> Result<(), PgError> {
    for row in rows {
        let expires_at = match row.get::<_, Option<i64>>(2) {
            None => Timestamp::MAX,
            Some(t) => codec::ts(t, "lot expiry")?,
        };
        let priority = u16::try_from(row.get::<_, i32>(3))
            .map_err(|_| PgError::corrupt("lot priority out of range"))?;
        slot(tenants, row.get(0))?.lots.push(Lot {
            key: LotKey {
                expires_at,
                priority,
                id: LotId::new(codec::u(row.get(1), "lot_id")?),
            },
            remaining: codec::amount(row.get(4), "remaining")?,
        });
    }
    Ok(())
}

fn add_holds(tenants: &mut Tenants, rows: &[Row]) -> Result<(), PgError> {
    for row in rows {
        let hold = Hold::from_parts(
            HoldId::new(codec::u(row.get(1), "hold_id")?),
            codec::amount(row.get(2), "hold amount")?,
            codec::hold_expiry_of(row.get(3))?,
            codec::draws_of(row.get(4))?,
        )
        .map_err(PgError::corrupt)?;
        let hold = match codec::owner_of(row.get(5), row.get(6))? {
            Some(owner) => hold.owned_by(owner),
            None => hold,
        };
        slot(tenants, row.get(0))?.holds.push(hold);
    }
    Ok(())
}

fn add_resolved(tenants: &mut Tenants, rows: &[Row]) -> Result<(), PgError> {
    for row in rows {
        if let Some(r) = codec::resolution(row.get(2), row.get(3))? {
            let id = HoldId::new(codec::u(row.get(1), "hold_id")?);
            let parts = slot(tenants, row.get(0))?;
            parts.resolved.push((id, r));
            if let Some(owner) = codec::owner_of(row.get(4), row.get(5))? {
                parts.owners.push((id, owner));
            }
        }
    }
    Ok(())
}

/// The journal entries refunds name, by tenant name; what was already refunded of each
/// goes into the tenant's parts.
fn add_targets(
    tenants: &mut Tenants,
    rows: &[Row],
) -> Result<HashMap<String, Vec<JournalEntry>>, PgError> {
    let mut targets: HashMap<String, Vec<JournalEntry>> = HashMap::new();
    for row in rows {
        let entry = codec::entry(row)?;
        let refunded = codec::amount(row.get(16), "refunded")?;
        let parts = slot(tenants, entry.tenant.as_str())?;
        if !refunded.is_zero() {
            parts.refunded.push((entry.seq, refunded));
        }
        // A transaction's charge: the rules refuse to refund it.
        if let (Some(hold), Some(owner)) = (entry.hold, codec::owner_of(row.get(17), row.get(18))?)
        {
            parts.owners.push((hold, owner));
        }
        targets
            .entry(entry.tenant.as_str().to_owned())
            .or_default()
            .push(entry);
    }
    Ok(targets)
}

/// The idempotency records found, by tenant name and key.
fn records(
    rows: &[Row],
) -> Result<HashMap<String, HashMap<IdempotencyKey, IdempotencyRecord>>, PgError> {
    let mut known: HashMap<String, HashMap<IdempotencyKey, IdempotencyRecord>> = HashMap::new();
    for row in rows {
        let record = codec::record_of(row.get(2))?;
        let key = IdempotencyKey::new(row.get::<_, &str>(1)).map_err(PgError::corrupt)?;
        known
            .entry(row.get::<_, &str>(0).to_owned())
            .or_default()
            .insert(key, record);
    }
    Ok(known)
}
