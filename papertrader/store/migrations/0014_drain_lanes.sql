-- 0014_drain_lanes: a drain applies its accounts in lanes at once (issue 15).
--
-- The master splits a drain's orders by account into lanes (master/transactions.py,
-- DRAIN_LANES), each a sequence of chunks in stamp order on a connection of its own,
-- so PostgreSQL applies them on as many cores at once. Accounts do not interact in a
-- drain: an order is decided against its own account's cash, units, reservations and
-- open orders, at the interval's price, so two lanes never touch the same account or
-- position row, and an account's orders keep their stamp order within its lane.
--
-- What changes here is the book lock. It serialised every drain chunk with the book's
-- turn and with cancels (pt_lock_book, 0005), so two lanes would have taken turns.
-- A drain chunk now takes it shared: chunks of different lanes go together, and
-- the book's turn and a cancel, which still take it exclusively, wait for every
-- chunk in flight, or go first, as before ("one of the two, never both, never
-- neither"). Two masters never drain at once: every transaction is fenced by the
-- leadership (master/leadership.py).
--
-- The body of pt_drain_orders is that of 0010_drain_speed.sql with this change, and
-- one more: an order whose id belongs to another account is told so with its own
-- terms, which its worker can read (see the outcome query).

-- The book lock, shared among drain chunks (see pt_lock_book).
CREATE FUNCTION pt_lock_book_shared() RETURNS VOID
LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock_shared(5788778346045681515) $$;

-- Apply the chunk staged in pt_order_stage at the interval's prices; returns one
-- outcome (the order's state as JSON) per staged row. An order id the master has
-- seen before (a retry, a replay after a crash, the same client order id through
-- two workers, an order canceled while queued) changes nothing: its current state
-- comes back. p_day_end is when day orders accepted now expire.
CREATE OR REPLACE FUNCTION pt_drain_orders(
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
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    PERFORM pt_lock_book_shared();

    -- New orders (the first row of each order id not in orders), checked; the ones
    -- that fail a check are recorded as rejected, the rest go to the walk.
    WITH px AS (
        SELECT u.symbol, u.price FROM unnest(p_symbols, p_prices) AS u(symbol, price)
    ), known AS (
        -- the ids of this chunk already recorded: one probe of the primary key each,
        -- whatever the size of orders (a join could scan it whole)
        SELECT o.order_id FROM orders o
        WHERE o.order_id = ANY (ARRAY(SELECT t.order_id FROM pt_order_stage t))
    ), fresh AS (
        SELECT DISTINCT ON (s.order_id) s.*, x.price, a.id IS NOT NULL AS known_account
        FROM pt_order_stage s
        LEFT JOIN px x ON x.symbol = s.symbol
        LEFT JOIN accounts a ON a.id = s.account_id
        WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.order_id = s.order_id)
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
    -- of another account learns nothing about it: it is told, with its own terms (the
    -- worker waiting on it reads an order's state; 0010 sent only the status, code
    -- and reason, which the worker could not read, so its client heard nothing).
    RETURN QUERY
    SELECT s.idx,
           COALESCE(w.status, CASE WHEN r.idx IS NOT NULL THEN 'rejected' END),
           COALESCE(w.code, r.code), COALESCE(w.reason, r.reason),
           w.amount::text, w.realized::text, w.res_cash::text, w.res_qty,
           CASE WHEN w.idx IS NOT NULL OR r.idx IS NOT NULL THEN NULL
                ELSE (SELECT CASE WHEN o.account_id = s.account_id THEN pt_order_json(o)
                                  ELSE json_build_object(
                                      'order_id', s.order_id, 'status', 'rejected', 'code', 117,
                                      'reason', 'the order id belongs to another account',
                                      'side', s.side, 'symbol', s.symbol,
                                      'quantity', s.quantity,
                                      'client_order_id', s.client_order_id,
                                      'received_at', s.received_at,
                                      'decided_at', p_now)::text
                             END
                      FROM orders o WHERE o.order_id = s.order_id)
           END
    FROM pt_order_stage s
    LEFT JOIN pt_order_walk_out w ON w.idx = s.idx
    LEFT JOIN pt_order_refused r ON r.idx = s.idx
    ORDER BY s.idx;
END;
$$;
