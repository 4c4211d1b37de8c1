-- 0013_drain_hot_updates: room on every page of accounts and positions for the drain's
-- updates (issue 15), so they are HOT updates that touch no index.
--
-- Every drain updates each account it applies orders for (cash, reservations,
-- realised profit) and each position they move. PostgreSQL can keep the new row
-- version on the old one's page without an index entry (a HOT update) only if the
-- page has room for it. The tables were packed full (fillfactor 100), so most updates
-- went to another page and added an entry to every index: five for accounts (the key,
-- the username and e-mail both as given and lowercased), whose expression indexes
-- also evaluate lower() for each row. Measured with 1,000 market orders from 1,000
-- accounts (bench/README.md, "PostgreSQL's apply"): 12 to 30 % of the account updates
-- and 25 to 45 % of the position updates were HOT; the drain's last statement (accounts and
-- positions written) took 26.5 ms, 17.7 of them the account update with 21 buffer
-- accesses per row. With pages half full, 99.6 % were HOT and the statement took
-- 9.8 ms. Half: a drain updates every row of a page at most once, so a page whose
-- rows take half of it has room for all their new versions; the old ones are pruned
-- by the next access once no transaction can see them.
--
-- The setting applies to pages filled from now on. An existing row moves to such a
-- page the first time it cannot be updated in place, so a database migrated with
-- full pages converges within a few intervals without a rewrite (which would lock
-- the tables for its duration). Nothing else changes: the same rows, constraints and
-- outcomes.

ALTER TABLE accounts SET (fillfactor = 50);
ALTER TABLE positions SET (fillfactor = 50);
