-- 0005_order_book: every order in one table, and a set-based drain (spec 3.1.7).
--
-- Before this, a filled order lived only in transactions and a rejected one
-- only in rejected_orders, and pt_apply_orders looped over a batch order by
-- order. Now:
--
-- * orders holds every order the master has seen, whatever became of it:
--   open (waiting in the book: a limit or stop order), filled, rejected,
--   canceled or expired, with a timestamp for each change. Its primary key is
--   the order id, which workers derive from the account and the client's own
--   order id (uuid5), so the same client order id sent twice, through two
--   workers at once, is one row: the second is answered with the first's state.
--   rejected_orders becomes a view of the rejected rows (still deletable, for a
--   retention purge); transactions keeps one row per fill (the history).
-- * Open orders reserve what they may spend: an open buy reserves cash
--   (quantity x limit, or x stop for a stop order), an open sell reserves units.
--   accounts.reserved_cash and positions.reserved_quantity hold the totals, and
--   CHECK constraints keep them within the cash and units there are, so open
--   orders filling together can never take either below zero.
-- * pt_drain_orders applies a chunk of orders staged (COPY) in the temporary
--   table pt_order_stage, with a handful of statements over the whole chunk:
--   validation and idempotency as joins, then one recursive walk that takes
--   every account's next order in step (all accounts at once), deciding each
--   against the cash and units the account's earlier orders left, then one
--   write per table. The walk is needed because a refused order must not count
--   against the ones after it, which a running sum cannot express.
--
-- Codes match papertrader.protocol.errors.ErrorCode.

-- Reservations and realised profit ------------------------------------------------
ALTER TABLE accounts
    ADD COLUMN reserved_cash NUMERIC(20, 2) NOT NULL DEFAULT 0,
    ADD COLUMN realized_pnl  NUMERIC(20, 2) NOT NULL DEFAULT 0,
    ADD CONSTRAINT accounts_reserved_cash_covered CHECK (reserved_cash >= 0 AND reserved_cash <= cash);

ALTER TABLE positions
    ADD COLUMN reserved_quantity BIGINT NOT NULL DEFAULT 0,
    ADD CONSTRAINT positions_reserved_quantity_covered
        CHECK (reserved_quantity >= 0 AND reserved_quantity <= quantity);

-- Every order ------------------------------------------------------------------------
-- One row per order id, written once by the drain when the order arrives and
-- again when it changes (a book order filling, expiring or being canceled).
-- No foreign key to accounts: a rejected order may name an account that does
-- not exist, and the drain locks the accounts it fills for (a per-row key
-- check would double the cost of a drain).
CREATE SEQUENCE orders_fill_id_seq;
CREATE TABLE orders (
    order_id          UUID PRIMARY KEY,
    account_id        BIGINT NOT NULL,
    client_order_id   UUID NOT NULL,
    side              TEXT NOT NULL,
    symbol            TEXT NOT NULL,
    quantity          BIGINT NOT NULL,
    order_type        TEXT NOT NULL DEFAULT 'market',
    limit_price       NUMERIC(20, 6),
    stop_price        NUMERIC(20, 6),
    time_in_force     TEXT NOT NULL DEFAULT 'day',
    status            TEXT NOT NULL,
    code              INTEGER NOT NULL DEFAULT 0,
    reason            TEXT NOT NULL DEFAULT '',
    reserved_cash     NUMERIC(20, 2) NOT NULL DEFAULT 0,  -- held while open
    reserved_quantity BIGINT NOT NULL DEFAULT 0,
    received_at       TIMESTAMPTZ,  -- the worker's stamp: queued
    accepted_at       TIMESTAMPTZ,  -- the drain took it (open, or filled at once)
    triggered_at      TIMESTAMPTZ,  -- a stop order's stop price was reached
    decided_at        TIMESTAMPTZ,  -- filled, rejected, canceled or expired
    expires_at        TIMESTAMPTZ,  -- a day order's end; NULL for gtc
    client_ip         INET,
    worker            TEXT NOT NULL DEFAULT '',
    -- the fill (status filled): the history row
    fill_id           BIGINT,  -- from orders_fill_id_seq: unique without an index
    price             NUMERIC(20, 6),
    amount            NUMERIC(20, 2),
    executed_at       TIMESTAMPTZ,
    realized_pnl      NUMERIC(20, 2),  -- a sell's profit or loss against the average cost
    CONSTRAINT orders_status
        CHECK (status IN ('open', 'filled', 'rejected', 'canceled', 'expired')),
    CONSTRAINT orders_side CHECK (status = 'rejected' OR side IN ('buy', 'sell')),
    CONSTRAINT orders_quantity_positive CHECK (status = 'rejected' OR quantity > 0),
    CONSTRAINT orders_reservation CHECK (reserved_cash >= 0 AND reserved_quantity >= 0),
    CONSTRAINT orders_fill CHECK (status = 'filled' OR fill_id IS NULL),
    CONSTRAINT orders_filled CHECK (status <> 'filled'
        OR (fill_id IS NOT NULL AND price >= 0 AND amount >= 0 AND executed_at IS NOT NULL))
);
-- The book: open orders by symbol, read once per interval; and by account (the
-- open-order limit, `pt client orders --open`, cancel --all).
CREATE INDEX orders_open_symbol_idx ON orders (symbol) WHERE status = 'open';
CREATE INDEX orders_open_account_idx ON orders (account_id) WHERE status = 'open';
-- An account's orders in time order (`pt client orders`, the history).
CREATE INDEX orders_account_idx ON orders (account_id, received_at);

-- What was there before becomes rows of orders: fills, then rejections.
INSERT INTO orders (order_id, account_id, client_order_id, side, symbol, quantity, status,
                    received_at, accepted_at, decided_at, client_ip, fill_id, price, amount,
                    executed_at)
SELECT order_id, account_id, order_id, side, symbol, quantity, 'filled',
       received_at, executed_at, executed_at, client_ip, id, price, amount, executed_at
FROM transactions;
SELECT setval('orders_fill_id_seq', COALESCE((SELECT max(fill_id) FROM orders), 0) + 1, FALSE);

INSERT INTO orders (order_id, account_id, client_order_id, side, symbol, quantity, status, code,
                    reason, received_at, decided_at)
SELECT order_id, account_id, order_id, side, symbol, quantity, 'rejected', code, reason,
       received_at, decided_at
FROM rejected_orders
ON CONFLICT DO NOTHING;

DROP FUNCTION pt_apply_orders(JSONB);
DROP TABLE rejected_orders;
DROP TABLE transactions;

-- The history and the refusals as they always read: plain views of one table,
-- so PostgreSQL can also delete through them (a retention purge, an account
-- deletion may say DELETE FROM rejected_orders WHERE ...).
CREATE VIEW transactions AS
SELECT fill_id AS id, order_id, account_id, side, symbol, quantity, price, amount, received_at,
       executed_at, client_ip, realized_pnl
FROM orders
WHERE status = 'filled';

CREATE VIEW rejected_orders AS
SELECT order_id, account_id, side, symbol, quantity, code, reason, received_at, decided_at
FROM orders
WHERE status = 'rejected';

-- A time as ISO 8601 in UTC with six fractional digits, the one form every Python
-- from 3.10 on parses (json_build_object's own output drops trailing zeros).
CREATE FUNCTION pt_iso(value TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
$$;

-- An order's whole state as JSON text, for the worker waiting on an order id the
-- master had seen before (money and prices as strings, never JSON numbers, so
-- nothing turns them into floats on the way). New orders' outcomes are built by
-- the master from the drain's columns (cheaper: most of the record is known).
CREATE FUNCTION pt_order_json(o orders) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'order_id', o.order_id,
        'client_order_id', o.client_order_id,
        'account_id', o.account_id,
        'status', o.status,
        'code', o.code,
        'reason', o.reason,
        'side', o.side,
        'symbol', o.symbol,
        'quantity', o.quantity,
        'order_type', o.order_type,
        'limit_price', o.limit_price::text,
        'stop_price', o.stop_price::text,
        'time_in_force', o.time_in_force,
        'reserved_cash', o.reserved_cash::text,
        'reserved_quantity', o.reserved_quantity,
        'price', o.price::text,
        'amount', o.amount::text,
        'realized_pnl', o.realized_pnl::text,
        'executed_at', pt_iso(o.executed_at),
        'received_at', pt_iso(o.received_at),
        'accepted_at', pt_iso(o.accepted_at),
        'triggered_at', pt_iso(o.triggered_at),
        'decided_at', pt_iso(o.decided_at),
        'expires_at', pt_iso(o.expires_at),
        'replayed', TRUE
    )::text
$$;

-- The drain's working tables: temporary (private to the master's connection, never
-- written to the WAL), emptied at every commit. Created on a connection's first drain.
CREATE FUNCTION pt_order_tables() RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.pt_order_refused') IS NOT NULL THEN
        RETURN;
    END IF;
    -- One row per stream entry of the chunk, idx = its place in stamp order.
    CREATE TEMP TABLE pt_order_stage (
        idx             INTEGER NOT NULL,
        order_id        UUID NOT NULL,
        account_id      BIGINT NOT NULL,
        client_order_id UUID NOT NULL,
        side            TEXT NOT NULL,
        symbol          TEXT NOT NULL,
        quantity        BIGINT NOT NULL,
        order_type      TEXT NOT NULL,
        limit_price     NUMERIC,
        stop_price      NUMERIC,
        time_in_force   TEXT NOT NULL,
        received_at     TIMESTAMPTZ NOT NULL,
        client_ip       INET,
        worker          TEXT NOT NULL,
        refused_code    INTEGER,  -- refused before the drain (a check of the master's own)
        refused_reason  TEXT
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE pt_order_refused (
        idx    INTEGER PRIMARY KEY,
        code   INTEGER NOT NULL,
        reason TEXT NOT NULL
    ) ON COMMIT DELETE ROWS;
    -- The orders the walk decides, k = 1, 2, ... per account in the order they go.
    CREATE TEMP TABLE pt_order_walk_in (
        account_id      BIGINT NOT NULL,
        k               INTEGER NOT NULL,
        idx             INTEGER NOT NULL,
        order_id        UUID NOT NULL,
        is_book         BOOLEAN NOT NULL,
        client_order_id UUID NOT NULL,
        side            TEXT NOT NULL,
        symbol          TEXT NOT NULL,
        quantity        BIGINT NOT NULL,
        order_type      TEXT NOT NULL,
        limit_price     NUMERIC,
        stop_price      NUMERIC,
        time_in_force   TEXT NOT NULL,
        received_at     TIMESTAMPTZ,
        client_ip       INET,
        worker          TEXT NOT NULL,
        price           NUMERIC NOT NULL,  -- the interval's price of the symbol
        cost            NUMERIC NOT NULL,  -- quantity x price, in cents
        fillable        BOOLEAN NOT NULL,  -- its condition holds at this price
        triggered       BOOLEAN NOT NULL,  -- a stop order whose stop price is reached
        open_cash       NUMERIC NOT NULL,  -- what it reserves if it waits (a buy)
        release_cash    NUMERIC NOT NULL,  -- what it reserved while open (a book order)
        release_qty     BIGINT NOT NULL,
        PRIMARY KEY (account_id, k)
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE pt_order_walk_start (
        account_id BIGINT PRIMARY KEY,
        cash       NUMERIC NOT NULL,
        reserved   NUMERIC NOT NULL,
        opens      BIGINT NOT NULL,
        pos        JSONB NOT NULL   -- symbol -> [units, reserved units, average cost]
    ) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE pt_order_walk_out (
        account_id BIGINT NOT NULL,
        k          INTEGER NOT NULL,
        idx        INTEGER NOT NULL,
        status     TEXT NOT NULL,
        code       INTEGER NOT NULL,
        reason     TEXT NOT NULL,
        amount     NUMERIC,
        realized   NUMERIC,
        res_cash   NUMERIC NOT NULL,
        res_qty    BIGINT NOT NULL,
        cash       NUMERIC NOT NULL,
        reserved   NUMERIC NOT NULL,
        pos        JSONB NOT NULL
    ) ON COMMIT DELETE ROWS;
END;
$$;

-- The walk over pt_order_walk_in: decides every order (into pt_order_walk_out) and
-- writes each account's cash, reservations, realised profit and positions once. Orders rows are the caller's (a new order is inserted, a book
-- order updated). The caller holds the book lock.
CREATE FUNCTION pt_walk_orders(p_now TIMESTAMPTZ, p_max_open BIGINT) RETURNS VOID
LANGUAGE plpgsql
-- Plan every statement for the tables as they are now (orders grows by thousands of
-- rows a second: a plan cached while it was small would scan it whole).
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    -- Each account's starting point, locked: cash, reservations, open orders, and the
    -- units, reserved units and average cost of the symbols its orders touch.
    INSERT INTO pt_order_walk_start (account_id, cash, reserved, opens, pos)
    SELECT a.id, a.cash, a.reserved_cash,
           (SELECT count(*) FROM orders o WHERE o.account_id = a.id AND o.status = 'open'),
           COALESCE(
               (SELECT jsonb_object_agg(p.symbol, jsonb_build_array(
                           p.quantity, p.reserved_quantity, p.average_price))
                FROM positions p
                WHERE p.account_id = a.id
                  AND p.symbol IN (SELECT i.symbol FROM pt_order_walk_in i WHERE i.account_id = a.id)),
               '{}'::jsonb)
    FROM accounts a
    WHERE a.id IN (SELECT i.account_id FROM pt_order_walk_in i)
      AND p_now IS NOT NULL  -- a parameter, so this is planned afresh too (see above)
    FOR UPDATE OF a;

    -- Step k + 1 of every account at once. Per order: release what a book order had
    -- reserved, then fill it (cash or units permitting), let it wait with its
    -- reservation, or refuse it (changing nothing).
    INSERT INTO pt_order_walk_out
    WITH RECURSIVE walk AS (
        SELECT s.account_id, 0 AS k, s.cash, s.reserved, s.opens, s.pos,
               0 AS idx, ''::text AS status, 0 AS code, ''::text AS reason,
               NULL::numeric AS amount, NULL::numeric AS realized,
               0::numeric AS res_cash, 0::bigint AS res_qty
        FROM pt_order_walk_start s
        UNION ALL
        SELECT w.account_id, w.k + 1, d.cash, d.reserved, d.opens,
               CASE WHEN d.moved
                    THEN jsonb_set(w.pos, ARRAY[i.symbol], jsonb_build_array(d.q, d.r, d.a))
                    ELSE w.pos END,
               i.idx, d.status, d.code, d.reason, d.amount, d.realized, d.res_cash, d.res_qty
        FROM walk w
        JOIN pt_order_walk_in i ON i.account_id = w.account_id AND i.k = w.k + 1
        CROSS JOIN LATERAL (
            SELECT COALESCE((w.pos -> i.symbol ->> 0)::bigint, 0) AS q0,
                   COALESCE((w.pos -> i.symbol ->> 1)::bigint, 0) - i.release_qty AS r0,
                   COALESCE((w.pos -> i.symbol ->> 2)::numeric, 0) AS a0,
                   w.reserved - i.release_cash AS res0,
                   w.opens - (CASE WHEN i.is_book THEN 1 ELSE 0 END) AS opens0
            OFFSET 0  -- evaluated once per row, not inlined into every use below
        ) s
        CROSS JOIN LATERAL (
            SELECT CASE
                WHEN i.fillable AND i.side = 'buy' THEN
                    CASE WHEN w.cash - s.res0 >= i.cost THEN 'fill' ELSE 'no-cash' END
                WHEN i.fillable THEN
                    CASE WHEN s.q0 - s.r0 >= i.quantity THEN 'fill' ELSE 'no-units' END
                WHEN s.opens0 >= p_max_open THEN 'too-many'
                WHEN i.side = 'buy' THEN
                    CASE WHEN w.cash - s.res0 >= i.open_cash THEN 'open' ELSE 'no-cash' END
                ELSE
                    CASE WHEN s.q0 - s.r0 >= i.quantity THEN 'open' ELSE 'no-units' END
            END AS act
            OFFSET 0
        ) c
        CROSS JOIN LATERAL (
            SELECT
                CASE WHEN c.act = 'fill' AND i.side = 'buy' THEN w.cash - i.cost
                     WHEN c.act = 'fill' THEN w.cash + i.cost
                     ELSE w.cash END AS cash,
                s.res0 + (CASE WHEN c.act = 'open' AND i.side = 'buy' THEN i.open_cash ELSE 0 END)
                    AS reserved,
                s.opens0 + (CASE WHEN c.act = 'open' THEN 1 ELSE 0 END) AS opens,
                (c.act = 'fill' OR (c.act = 'open' AND i.side = 'sell') OR i.release_qty <> 0)
                    AS moved,
                CASE WHEN c.act <> 'fill' THEN s.q0
                     WHEN i.side = 'buy' THEN s.q0 + i.quantity
                     ELSE s.q0 - i.quantity END AS q,
                s.r0 + (CASE WHEN c.act = 'open' AND i.side = 'sell' THEN i.quantity ELSE 0 END)
                    AS r,
                CASE WHEN c.act = 'fill' AND i.side = 'buy'
                     THEN round((s.q0 * s.a0 + i.quantity * i.price) / (s.q0 + i.quantity), 6)
                     ELSE s.a0 END AS a,
                CASE c.act WHEN 'fill' THEN 'filled' WHEN 'open' THEN 'open' ELSE 'rejected' END
                    AS status,
                CASE c.act WHEN 'no-cash' THEN 110 WHEN 'no-units' THEN 111
                           WHEN 'too-many' THEN 145 ELSE 0 END AS code,
                CASE c.act
                    WHEN 'no-cash' THEN
                        CASE WHEN i.fillable
                             THEN format('buying %s %s at %s costs %s', i.quantity, i.symbol,
                                         i.price, i.cost)
                             ELSE format('a %s buy of %s %s reserves %s', replace(i.order_type, '_', '-'),
                                         i.quantity, i.symbol, i.open_cash) END
                        || format('; cash is %s', w.cash)
                        || CASE WHEN s.res0 > 0
                                THEN format(', of which %s is reserved for open orders', s.res0)
                                ELSE '' END
                    WHEN 'no-units' THEN
                        format('selling %s %s but %s held', i.quantity, i.symbol, s.q0)
                        || CASE WHEN s.r0 > 0
                                THEN format(', of which %s are reserved for open orders', s.r0)
                                ELSE '' END
                    WHEN 'too-many' THEN
                        format('the account already has %s open orders, the most allowed', s.opens0)
                    ELSE '' END AS reason,
                CASE WHEN c.act = 'fill' THEN i.cost END AS amount,
                CASE WHEN c.act = 'fill' AND i.side = 'sell'
                     THEN i.cost - round(i.quantity * s.a0, 2) END AS realized,
                CASE WHEN c.act = 'open' AND i.side = 'buy' THEN i.open_cash ELSE 0 END AS res_cash,
                CASE WHEN c.act = 'open' AND i.side = 'sell' THEN i.quantity ELSE 0 END AS res_qty
        ) d
    )
    SELECT account_id, k, idx, status, code, reason, amount, realized, res_cash, res_qty,
           cash, reserved, pos
    FROM walk
    WHERE k > 0;

    -- Each account's last step holds its final cash, reservations and positions.
    WITH last AS (
        SELECT DISTINCT ON (o.account_id) o.account_id, o.cash, o.reserved, o.pos
        FROM pt_order_walk_out o
        ORDER BY o.account_id, o.k DESC
    ), realized AS (
        SELECT o.account_id, sum(o.realized) AS total
        FROM pt_order_walk_out o WHERE o.realized IS NOT NULL
        GROUP BY o.account_id
    ), accounts_done AS (
        UPDATE accounts a
        SET cash = l.cash, reserved_cash = l.reserved,
            realized_pnl = a.realized_pnl + COALESCE(r.total, 0)
        FROM last l LEFT JOIN realized r ON r.account_id = l.account_id
        WHERE a.id = l.account_id AND p_now IS NOT NULL
          AND (a.cash, a.reserved_cash) IS DISTINCT FROM (l.cash, l.reserved)
    ), held AS (
        SELECT l.account_id, e.key AS symbol, (e.value ->> 0)::bigint AS quantity,
               (e.value ->> 1)::bigint AS reserved, (e.value ->> 2)::numeric AS average
        FROM last l, jsonb_each(l.pos) e
    ), gone AS (
        DELETE FROM positions p USING held h
        WHERE p.account_id = h.account_id AND p.symbol = h.symbol AND h.quantity = 0
          AND p_now IS NOT NULL
    )
    INSERT INTO positions AS p (account_id, symbol, quantity, average_price, reserved_quantity)
    SELECT h.account_id, h.symbol, h.quantity, h.average, h.reserved
    FROM held h
    WHERE h.quantity > 0 AND p_now IS NOT NULL
    ON CONFLICT (account_id, symbol) DO UPDATE
    SET quantity = EXCLUDED.quantity, average_price = EXCLUDED.average_price,
        reserved_quantity = EXCLUDED.reserved_quantity
    WHERE (p.quantity, p.average_price, p.reserved_quantity)
          IS DISTINCT FROM (EXCLUDED.quantity, EXCLUDED.average_price, EXCLUDED.reserved_quantity);
END;
$$;

-- Serialises everything that changes the book: a drain chunk, the book's own
-- turn each interval, and a cancel. A cancel racing the drain therefore waits
-- for the chunk to commit and sees its outcome, or goes first and the drain
-- sees the canceled order: one of the two, never both, never neither.
CREATE FUNCTION pt_lock_book() RETURNS VOID
LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(5788778346045681515) $$;  -- "PTobook!"

-- Apply the chunk staged in pt_order_stage at the interval's prices; returns one
-- outcome (the order's state as JSON) per staged row. An order id the master has
-- seen before (a retry, a replay after a crash, the same client order id through
-- two workers, an order canceled while queued) changes nothing: its current state
-- comes back. p_day_end is when day orders accepted now expire.
CREATE FUNCTION pt_drain_orders(
    p_now TIMESTAMPTZ, p_day_end TIMESTAMPTZ, p_symbols TEXT[], p_prices NUMERIC[],
    p_max_open BIGINT
) RETURNS TABLE (
    idx INTEGER, status TEXT, code INTEGER, reason TEXT, amount TEXT, realized_pnl TEXT,
    reserved_cash TEXT, reserved_quantity BIGINT, record TEXT
)
LANGUAGE plpgsql
-- Plan every statement for the tables as they are now (orders grows by thousands of
-- rows a second: a plan cached while it was small would scan it whole).
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
BEGIN
    PERFORM pt_lock_book();

    -- New orders (the first row of each order id not in orders), checked; the ones
    -- that fail a check are recorded as rejected, the rest go to the walk.
    WITH px AS (
        SELECT u.symbol, u.price FROM unnest(p_symbols, p_prices) AS u(symbol, price)
    ), fresh AS (
        SELECT DISTINCT ON (s.order_id) s.*, x.price, a.id IS NOT NULL AS known_account
        FROM pt_order_stage s
        LEFT JOIN px x ON x.symbol = s.symbol
        LEFT JOIN accounts a ON a.id = s.account_id
        WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = s.order_id)
        ORDER BY s.order_id, s.idx
    ), checked AS (
        SELECT f.*,
            CASE
                WHEN f.refused_code IS NOT NULL THEN f.refused_code
                WHEN NOT f.known_account THEN 112
                WHEN f.side NOT IN ('buy', 'sell') THEN 9
                WHEN f.quantity <= 0 THEN 109
                WHEN f.order_type NOT IN ('market', 'limit', 'stop', 'stop_limit')
                  OR f.time_in_force NOT IN ('day', 'gtc')
                  OR (f.limit_price IS NULL) = (f.order_type IN ('limit', 'stop_limit'))
                  OR (f.stop_price IS NULL) = (f.order_type IN ('stop', 'stop_limit')) THEN 143
                WHEN f.limit_price <= 0 OR f.stop_price <= 0
                  OR f.limit_price >= 1e14 OR f.stop_price >= 1e14
                  OR f.limit_price <> round(f.limit_price, 6)
                  OR f.stop_price <> round(f.stop_price, 6) THEN 144
                WHEN f.price IS NULL THEN 108
                WHEN f.quantity * greatest(f.price, f.limit_price, f.stop_price) >= 1e17 THEN 109
            END AS code
        FROM fresh f
    ), refused AS (
        SELECT c.*,
               CASE
                   WHEN c.refused_code IS NOT NULL THEN c.refused_reason
                   WHEN c.code = 112 THEN 'account does not exist'
                   WHEN c.code = 9 THEN format('side %s is neither buy nor sell', c.side)
                   WHEN c.code = 109 THEN
                       CASE WHEN c.quantity <= 0 THEN 'quantity must be a whole number of at least 1'
                            ELSE format('quantity %s is too large', c.quantity) END
                   WHEN c.code = 143 THEN CASE
                       WHEN c.order_type NOT IN ('market', 'limit', 'stop', 'stop_limit')
                           THEN format('order type %s is not market, limit, stop or stop_limit',
                                       c.order_type)
                       WHEN c.time_in_force NOT IN ('day', 'gtc')
                           THEN format('time in force %s is not day or gtc', c.time_in_force)
                       ELSE format('a %s order takes %s', replace(c.order_type, '_', '-'),
                                   CASE c.order_type
                                       WHEN 'market' THEN 'neither a limit nor a stop price'
                                       WHEN 'limit' THEN 'a limit price and no stop price'
                                       WHEN 'stop' THEN 'a stop price and no limit price'
                                       ELSE 'a limit price and a stop price' END)
                       END
                   WHEN c.code = 144 THEN 'limit and stop prices must be more than 0, less than'
                                          ' 100000000000000 and have at most 6 decimal places'
                   WHEN c.code = 108 THEN format('no price for %s this interval', c.symbol)
               END AS reason
        FROM checked c
        WHERE c.code IS NOT NULL
    ), refused_orders AS (
        INSERT INTO orders (order_id, account_id, client_order_id, side, symbol, quantity,
                            order_type, limit_price, stop_price, time_in_force, status, code,
                            reason, received_at, decided_at, client_ip, worker)
        SELECT r.order_id, r.account_id, r.client_order_id, r.side, r.symbol, r.quantity,
               r.order_type, r.limit_price, r.stop_price, r.time_in_force, 'rejected', r.code,
               r.reason, r.received_at, p_now, r.client_ip, r.worker
        FROM refused r
    ), refused_outcomes AS (
        INSERT INTO pt_order_refused (idx, code, reason)
        SELECT r.idx, r.code, r.reason FROM refused r
    )
    INSERT INTO pt_order_walk_in
    SELECT c.account_id,
           row_number() OVER (PARTITION BY c.account_id ORDER BY c.idx),
           c.idx, c.order_id, FALSE, c.client_order_id, c.side, c.symbol, c.quantity,
           c.order_type, c.limit_price, c.stop_price, c.time_in_force, c.received_at,
           c.client_ip, c.worker, c.price, round(c.quantity * c.price, 2),
           CASE c.order_type
               WHEN 'market' THEN TRUE
               WHEN 'limit' THEN g.limit_ok
               WHEN 'stop' THEN g.triggered
               ELSE g.triggered AND g.limit_ok END,
           g.triggered,
           CASE WHEN c.side = 'sell' THEN 0
                ELSE round(c.quantity * COALESCE(c.limit_price, c.stop_price, 0), 2) END,
           0, 0
    FROM checked c
    CROSS JOIN LATERAL (
        SELECT c.order_type IN ('stop', 'stop_limit')
               AND CASE WHEN c.side = 'buy' THEN c.price >= c.stop_price
                        ELSE c.price <= c.stop_price END AS triggered,
               CASE WHEN c.side = 'buy' THEN c.price <= c.limit_price
                    ELSE c.price >= c.limit_price END AS limit_ok
    ) g
    WHERE c.code IS NULL;

    PERFORM pt_walk_orders(p_now, p_max_open);

    INSERT INTO orders (order_id, account_id, client_order_id, side, symbol, quantity, order_type,
                        limit_price, stop_price, time_in_force, status, code, reason,
                        reserved_cash, reserved_quantity, received_at, accepted_at, triggered_at,
                        decided_at, expires_at, client_ip, worker, fill_id, price, amount,
                        executed_at, realized_pnl)
    SELECT i.order_id, i.account_id, i.client_order_id, i.side, i.symbol, i.quantity,
           i.order_type, i.limit_price, i.stop_price, i.time_in_force, o.status, o.code, o.reason,
           o.res_cash, o.res_qty, i.received_at,
           CASE WHEN o.status <> 'rejected' THEN p_now END,
           CASE WHEN i.triggered AND o.status <> 'rejected' THEN p_now END,
           CASE WHEN o.status <> 'open' THEN p_now END,
           CASE WHEN o.status = 'open' AND i.time_in_force = 'day' THEN p_day_end END,
           i.client_ip, i.worker,
           CASE WHEN o.status = 'filled' THEN nextval('orders_fill_id_seq') END,
           CASE WHEN o.status = 'filled' THEN i.price END,
           o.amount,
           CASE WHEN o.status = 'filled' THEN p_now END,
           o.realized
    FROM pt_order_walk_in i
    JOIN pt_order_walk_out o ON o.account_id = i.account_id AND o.k = i.k
    ORDER BY i.idx;

    -- Every staged row's outcome. An order decided in this call comes back as the
    -- columns the master completes with what it knows (the terms, the price, the
    -- time); an order seen before comes back whole, as JSON. A row naming an order
    -- of another account learns nothing about it.
    RETURN QUERY
    SELECT s.idx,
           COALESCE(w.status, CASE WHEN r.idx IS NOT NULL THEN 'rejected' END),
           COALESCE(w.code, r.code), COALESCE(w.reason, r.reason),
           w.amount::text, w.realized::text, w.res_cash::text, w.res_qty,
           CASE WHEN w.idx IS NOT NULL OR r.idx IS NOT NULL THEN NULL
                ELSE (SELECT CASE WHEN o.account_id = s.account_id THEN pt_order_json(o)
                                  ELSE json_build_object(
                                      'status', 'rejected', 'code', 117,
                                      'reason', 'the order id belongs to another account')::text
                             END
                      FROM orders o WHERE o.order_id = s.order_id)
           END
    FROM pt_order_stage s
    LEFT JOIN pt_order_walk_out w ON w.idx = s.idx
    LEFT JOIN pt_order_refused r ON r.idx = s.idx
    ORDER BY s.idx;
END;
$$;

-- The book's turn, once per interval before the new orders: day orders past their
-- end expire, then every open order whose condition holds at the interval's price
-- fills (a stop order whose stop is reached fills like a market order; a
-- stop-limit order becomes a limit order). A fill uses what the order reserved; a
-- stop buy that costs more than its reservation and the free cash is rejected.
-- Returns how many orders were filled, rejected, expired and triggered.
CREATE FUNCTION pt_drain_book(
    p_now TIMESTAMPTZ, p_symbols TEXT[], p_prices NUMERIC[]
) RETURNS TABLE (filled BIGINT, rejected BIGINT, expired BIGINT, triggered BIGINT)
LANGUAGE plpgsql
-- Plan every statement for the tables as they are now (orders grows by thousands of
-- rows a second: a plan cached while it was small would scan it whole).
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_expired   BIGINT;
    v_triggered BIGINT;
BEGIN
    PERFORM pt_lock_book();

    WITH gone AS (
        UPDATE orders o
        SET status = 'expired', decided_at = p_now, reserved_cash = 0, reserved_quantity = 0,
            reason = 'a day order ends at the close'
        FROM (SELECT order_id, reserved_cash, reserved_quantity FROM orders
              WHERE status = 'open' AND expires_at <= p_now FOR UPDATE) e
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

    WITH px AS (
        SELECT u.symbol, u.mark FROM unnest(p_symbols, p_prices) AS u(symbol, mark)
    ), open AS (
        SELECT o.*, x.mark,
               o.order_type IN ('stop', 'stop_limit')
               AND CASE WHEN o.side = 'buy' THEN x.mark >= o.stop_price
                        ELSE x.mark <= o.stop_price END AS reached,
               CASE WHEN o.side = 'buy' THEN x.mark <= o.limit_price
                    ELSE x.mark >= o.limit_price END AS limit_ok
        FROM orders o JOIN px x ON x.symbol = o.symbol
        WHERE o.status = 'open'
    ), ready AS (
        SELECT p.*,
               CASE p.order_type
                   WHEN 'limit' THEN p.limit_ok
                   WHEN 'stop' THEN p.reached
                   ELSE (p.triggered_at IS NOT NULL OR p.reached) AND p.limit_ok END AS fillable
        FROM open p
    ), marked AS (
        -- a stop-limit order reached now but not fillable waits on as a limit order
        UPDATE orders o SET triggered_at = p_now
        FROM ready r
        WHERE o.order_id = r.order_id AND r.order_type = 'stop_limit' AND r.triggered_at IS NULL
          AND r.reached AND NOT r.fillable
        RETURNING o.order_id
    ), walk_in AS (
        INSERT INTO pt_order_walk_in
        SELECT r.account_id,
               row_number() OVER (PARTITION BY r.account_id ORDER BY r.received_at, r.order_id),
               (row_number() OVER (ORDER BY r.received_at, r.order_id))::integer,
               r.order_id, TRUE, r.client_order_id, r.side, r.symbol, r.quantity, r.order_type,
               r.limit_price, r.stop_price, r.time_in_force, r.received_at, r.client_ip, r.worker,
               r.mark, round(r.quantity * r.mark, 2), TRUE,
               r.order_type IN ('stop', 'stop_limit') AND r.triggered_at IS NULL, 0,
               r.reserved_cash, r.reserved_quantity
        FROM ready r
        WHERE r.fillable
        RETURNING 1
    )
    SELECT count(*) INTO v_triggered FROM marked;

    PERFORM pt_walk_orders(p_now, 2147483647);

    UPDATE orders o
    SET status = w.status, code = w.code, reason = w.reason, decided_at = p_now,
        reserved_cash = 0, reserved_quantity = 0,
        triggered_at = CASE WHEN i.triggered THEN p_now ELSE o.triggered_at END,
        fill_id = CASE WHEN w.status = 'filled' THEN nextval('orders_fill_id_seq') END,
        price = CASE WHEN w.status = 'filled' THEN i.price END,
        amount = w.amount,
        executed_at = CASE WHEN w.status = 'filled' THEN p_now END,
        realized_pnl = w.realized
    FROM pt_order_walk_out w
    JOIN pt_order_walk_in i ON i.account_id = w.account_id AND i.k = w.k
    WHERE o.order_id = i.order_id;

    RETURN QUERY
    SELECT count(*) FILTER (WHERE w.status = 'filled'),
           count(*) FILTER (WHERE w.status = 'rejected'),
           v_expired, v_triggered
    FROM pt_order_walk_out w;
END;
$$;

-- Cancel one open order of an account: its reservation is released. Returns the
-- order as it is afterwards (canceled, or whatever it was if it was not open),
-- nothing if the account has no such order.
CREATE FUNCTION pt_cancel_order(p_account BIGINT, p_order_id UUID, p_now TIMESTAMPTZ)
RETURNS SETOF orders
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pt_lock_book();
    PERFORM pt_cancel_open(p_account, ARRAY[p_order_id], p_now, 'canceled by its owner');
    RETURN QUERY SELECT * FROM orders WHERE order_id = p_order_id AND account_id = p_account;
END;
$$;

-- Cancel every open order of an account; returns how many.
CREATE FUNCTION pt_cancel_all_orders(p_account BIGINT, p_now TIMESTAMPTZ) RETURNS BIGINT
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pt_lock_book();
    RETURN pt_cancel_open(
        p_account,
        ARRAY(SELECT order_id FROM orders WHERE account_id = p_account AND status = 'open'),
        p_now, 'canceled by its owner (cancel all)');
END;
$$;

-- The shared part (the caller holds the book lock): open orders among p_orders
-- become canceled and give back what they reserved.
CREATE FUNCTION pt_cancel_open(p_account BIGINT, p_orders UUID[], p_now TIMESTAMPTZ, p_reason TEXT)
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    v_count BIGINT;
BEGIN
    WITH target AS (
        SELECT order_id, symbol, reserved_cash, reserved_quantity FROM orders
        WHERE order_id = ANY (p_orders) AND account_id = p_account AND status = 'open'
        FOR UPDATE
    ), done AS (
        UPDATE orders o
        SET status = 'canceled', decided_at = p_now, reason = p_reason,
            reserved_cash = 0, reserved_quantity = 0
        FROM target t
        WHERE o.order_id = t.order_id
        RETURNING o.order_id
    ), cash AS (
        UPDATE accounts a SET reserved_cash = a.reserved_cash - t.total
        FROM (SELECT sum(reserved_cash) AS total FROM target) t
        WHERE a.id = p_account AND t.total > 0
    ), units AS (
        UPDATE positions p SET reserved_quantity = p.reserved_quantity - t.total
        FROM (SELECT symbol, sum(reserved_quantity) AS total FROM target GROUP BY symbol) t
        WHERE p.account_id = p_account AND p.symbol = t.symbol AND t.total > 0
    )
    SELECT count(*) INTO v_count FROM done;
    RETURN v_count;
END;
$$;

-- Cancel an order still in the order stream (not drained yet): it is recorded as
-- canceled now, so the drain, finding its id known, changes nothing and tells the
-- worker waiting on it that it was canceled. If the drain got there first the
-- order is left as the drain decided it. Returns the order as it is afterwards.
CREATE FUNCTION pt_cancel_queued(
    p_order_id UUID, p_account BIGINT, p_client_order_id UUID, p_side TEXT, p_symbol TEXT,
    p_quantity BIGINT, p_order_type TEXT, p_limit NUMERIC, p_stop NUMERIC, p_time_in_force TEXT,
    p_received_at TIMESTAMPTZ, p_client_ip INET, p_worker TEXT, p_now TIMESTAMPTZ
) RETURNS SETOF orders
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pt_lock_book();
    INSERT INTO orders (order_id, account_id, client_order_id, side, symbol, quantity, order_type,
                        limit_price, stop_price, time_in_force, status, reason, received_at,
                        decided_at, client_ip, worker)
    VALUES (p_order_id, p_account, p_client_order_id, p_side, p_symbol, p_quantity, p_order_type,
            p_limit, p_stop, p_time_in_force, 'canceled', 'canceled by its owner before its drain',
            p_received_at, p_now, p_client_ip, p_worker)
    ON CONFLICT (order_id) DO NOTHING;
    RETURN QUERY SELECT * FROM orders WHERE order_id = p_order_id AND account_id = p_account;
END;
$$;
