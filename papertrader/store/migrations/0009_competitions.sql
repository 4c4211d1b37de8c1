-- 0009_competitions: trading competitions with their own accounts (issue 13, item 7).
--
-- A competition (Investopedia's "game"): a name, a window [starts_at, ends_at),
-- a starting cash, the assets it trades (NULL: every asset) and, for a private
-- one, a join code. Created by an operator (`pt competitions create`,
-- created_by NULL) or a user (createCompetition).
--
-- A member's competition account is a row of accounts of its own (owner_id =
-- the member's account): its own cash, positions, reservations and realised
-- profit, filled by the same drain as the practice account, so everything the
-- order book guarantees holds for it unchanged. It cannot sign in (no password,
-- no linked provider) and its username, '~<competition>.<member>', is one no
-- user can register (usernames are letters, digits, '_', '.', '-'). Leaving a
-- competition, or deleting the member's account, deletes it with its orders.

CREATE TABLE competitions (
    id            BIGSERIAL PRIMARY KEY,
    name          VARCHAR(48) NOT NULL,
    created_by    BIGINT REFERENCES accounts (id) ON DELETE SET NULL,  -- NULL: an operator
    starts_at     TIMESTAMPTZ NOT NULL,
    ends_at       TIMESTAMPTZ NOT NULL,
    starting_cash NUMERIC(20, 2) NOT NULL,
    symbols       TEXT[],  -- the assets it trades; NULL: every asset
    join_code     TEXT UNIQUE,  -- a private competition's; NULL: public
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT competitions_window CHECK (ends_at > starts_at),
    CONSTRAINT competitions_starting_cash CHECK (starting_cash > 0),
    CONSTRAINT competitions_name_length CHECK (char_length(name) BETWEEN 1 AND 48)
);
-- Names are unique whatever their case: "Class 7B" and "class 7b" are one.
CREATE UNIQUE INDEX competitions_name_lower_key ON competitions (lower(name));

ALTER TABLE accounts
    ADD COLUMN owner_id BIGINT REFERENCES accounts (id) ON DELETE CASCADE;
CREATE INDEX accounts_owner_idx ON accounts (owner_id) WHERE owner_id IS NOT NULL;

CREATE TABLE competition_members (
    competition_id BIGINT NOT NULL REFERENCES competitions (id) ON DELETE CASCADE,
    user_id        BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    account_id     BIGINT NOT NULL UNIQUE REFERENCES accounts (id) ON DELETE CASCADE,
    joined_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (competition_id, user_id)
);
CREATE INDEX competition_members_user_idx ON competition_members (user_id);

-- The open orders of competitions that have ended expire (their reservations
-- released), as day orders do at the close: nothing fills after the end. Run by
-- the drain before the book's turn, under the book lock. Returns how many.
CREATE FUNCTION pt_expire_competition_orders(p_now TIMESTAMPTZ) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    v_expired BIGINT;
BEGIN
    PERFORM pt_lock_book();
    WITH ended AS (
        SELECT m.account_id FROM competition_members m
        JOIN competitions c ON c.id = m.competition_id
        WHERE c.ends_at <= p_now
    ), gone AS (
        UPDATE orders o
        SET status = 'expired', decided_at = p_now, reserved_cash = 0, reserved_quantity = 0,
            reason = 'the competition has ended'
        FROM (SELECT order_id, reserved_cash, reserved_quantity FROM orders
              WHERE status = 'open' AND account_id IN (SELECT account_id FROM ended)
              FOR UPDATE) e
        WHERE o.order_id = e.order_id
        RETURNING o.account_id, o.symbol, e.reserved_cash, e.reserved_quantity
    ), cash AS (
        UPDATE accounts a SET reserved_cash = a.reserved_cash - g.total
        FROM (SELECT account_id, sum(reserved_cash) AS total FROM gone GROUP BY account_id) g
        WHERE a.id = g.account_id AND g.total <> 0
    ), units AS (
        UPDATE positions p SET reserved_quantity = p.reserved_quantity - g.total
        FROM (SELECT account_id, symbol, sum(reserved_quantity) AS total FROM gone
              GROUP BY account_id, symbol) g
        WHERE p.account_id = g.account_id AND p.symbol = g.symbol AND g.total <> 0
    )
    SELECT count(*) INTO v_expired FROM gone;
    RETURN v_expired;
END;
$$;
