-- Room on every page for HOT updates of the rows a change rewrites (a tenant's counters,
-- its lots, its holds): an update that fits on its page adds no index entry, so it is
-- cheaper, bloats nothing, and under SERIALIZABLE it does not touch the index pages other
-- transactions read (which would be a serialization failure between changes that share
-- no tenant). Applies to pages written from now on; `VACUUM FULL` rewrites older ones.
ALTER TABLE accounts SET (fillfactor = 70);
ALTER TABLE credit_lots SET (fillfactor = 70);
ALTER TABLE holds SET (fillfactor = 80);
