-- 0007_profiles_equity: private profiles, and each account's equity over time.
--
-- Another user's positions, history and details are shown only for a public
-- profile; to a stranger a private user and a user who does not exist look the
-- same (papertrader/master/portfolio.py).
ALTER TABLE accounts ADD COLUMN public_profile BOOLEAN NOT NULL DEFAULT FALSE;

-- The master records the equity (cash + the positions' value at that
-- interval's prices) of every account holding a position, once per
-- `equity_snapshot_seconds`, and thins old rows out (one an hour after a day,
-- one a day after a month). An account without positions keeps its cash as
-- equity: its chart carries its last point forward (papertrader/store/equity.py).
CREATE TABLE equity_snapshots (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    at         TIMESTAMPTZ NOT NULL,
    equity     NUMERIC(20, 2) NOT NULL,
    cash       NUMERIC(20, 2) NOT NULL,
    PRIMARY KEY (account_id, at)
);
