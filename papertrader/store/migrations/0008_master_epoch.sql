-- 0008_master_epoch: which master is the active one, and the fencing token that keeps a
-- deposed master from writing anything (docs/OPERATIONS.md, "Standby masters").
--
-- One row. A master that holds the session-level advisory lock (store/master_epoch.py
-- LEADER_LOCK_KEY) on its dedicated connection takes over with pt_take_over: the epoch
-- goes up by one. Every transaction of an active master starts with pt_fence(its epoch),
-- which takes a share lock on the row: the take-over's UPDATE waits for the transactions
-- of the previous master that are still running, and every one that starts after it
-- finds another epoch and fails. Nothing here needs more than SELECT and UPDATE on this
-- table (FOR SHARE needs UPDATE), so the master's runtime role can be a plain one.

CREATE TABLE master_epoch (
    id      SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    epoch   BIGINT NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    -- who took over last: "host pid N", and the link address workers use to reach it
    holder  TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    since   TIMESTAMPTZ
);
INSERT INTO master_epoch (id) VALUES (1);

-- Raises PTF01 unless `expected` is still the epoch; holds a share lock on the row until
-- the calling transaction ends.
CREATE FUNCTION pt_fence(expected BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM master_epoch WHERE id = 1 AND epoch = expected FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: master epoch % is no longer the active one', expected
            USING ERRCODE = 'PTF01';
    END IF;
END $$;

-- The next epoch, for the caller, which must hold the leader lock (key split as pg_locks
-- shows a bigint advisory key: high half in classid, low half in objid).
CREATE FUNCTION pt_take_over(lock_key BIGINT, new_holder TEXT, new_address TEXT)
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    next_epoch BIGINT;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
          AND classid::bigint = (lock_key >> 32) AND objid::bigint = (lock_key & 4294967295)
    ) THEN
        RAISE EXCEPTION 'take-over without the leader lock' USING ERRCODE = 'PTF02';
    END IF;
    UPDATE master_epoch
       SET epoch = epoch + 1, holder = new_holder, address = new_address, since = now()
     WHERE id = 1
    RETURNING epoch INTO next_epoch;
    RETURN next_epoch;
END $$;
