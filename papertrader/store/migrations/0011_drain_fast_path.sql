-- 0011_drain_fast_path: accounts whose orders all go through skip the walk (issue 15).
--
-- pt_walk_orders decides every account's orders one step per order (a recursive
-- query: a refused order changes nothing for the ones after it, which a running sum
-- cannot express). Most accounts refuse nothing: their cash covers their purchases
-- and their units their sales. Such an account's orders are now decided by a few
-- sums over the whole chunk, and only the other accounts are walked. The outcomes,
-- cash, reservations, positions, average costs and realised profits are the walk's
-- own (tests/test_drain_fast_path.py drains the same random orders both ways and
-- compares everything). The body is 0005_order_book.sql's with the fast path added
-- before the walk and the walk started from the other accounts only (and, as in
-- 0010, never JIT-compiled).

-- The walk over pt_order_walk_in: decides every order (into pt_order_walk_out) and
-- writes each account's cash, reservations, realised profit and positions once. Orders
-- rows are the caller's (a new order is inserted, a book order updated). The caller
-- holds the book lock.
CREATE OR REPLACE FUNCTION pt_walk_orders(p_now TIMESTAMPTZ, p_max_open BIGINT) RETURNS VOID
LANGUAGE plpgsql
-- Plan every statement for the tables as they are now (orders grows by thousands of
-- rows a second: a plan cached while it was small would scan it whole).
SET plan_cache_mode = force_custom_plan
SET jit = off
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

    -- The fast path. An account whose orders in this walk all go through whatever
    -- their order (its buys and the cash its orders would reserve cost no more than
    -- its free cash, before any sale's proceeds; its sales and the units they would
    -- reserve are covered by the free units it holds, before any purchase; its new
    -- open orders fit under the limit) needs no walk: every one of its orders fills
    -- or waits, exactly as the walk would decide, and its totals are sums. Its rows
    -- go straight to pt_order_walk_out as the walk would write them; every other
    -- account is walked below. The average cost is the one thing a sum cannot carry
    -- (the walk rounds it at every purchase), so a symbol bought here takes the fast
    -- path only if every purchase leaves it at the price: the position is empty or
    -- already at the price (which has at most 6 decimals). Then too a sale's profit
    -- is reckoned against the average the account started with. Book orders (they
    -- release a reservation) always walk. SET papertrader.drain_walk_all = on walks
    -- every account (tests/test_drain_fast_path.py compares the two).
    IF COALESCE(current_setting('papertrader.drain_walk_all', TRUE), '') <> 'on' THEN
        INSERT INTO pt_order_walk_out
        WITH held AS (  -- per account and symbol, if every order goes through
            SELECT i.account_id, i.symbol, min(i.price) AS price, max(i.price) AS price_max,
                   COALESCE(sum(i.quantity) FILTER (WHERE i.fillable AND i.side = 'buy'), 0)
                       AS bought,
                   count(*) FILTER (WHERE i.fillable AND i.side = 'buy') AS buys,
                   COALESCE(sum(i.quantity) FILTER (WHERE i.fillable AND i.side = 'sell'), 0)
                       AS sold,
                   COALESCE(sum(i.quantity) FILTER (WHERE NOT i.fillable AND i.side = 'sell'), 0)
                       AS offered
            FROM pt_order_walk_in i
            GROUP BY i.account_id, i.symbol
        ), groups AS (
            SELECT h.*, p.q0, p.r0, p.a0,
                   h.sold + h.offered <= p.q0 - p.r0
                   AND (h.buys = 0 OR (h.price = h.price_max AND h.price = round(h.price, 6)
                                       AND (p.q0 = 0 OR p.a0 = h.price))) AS simple,
                   CASE WHEN h.buys = 0 THEN p.a0 ELSE round(h.price, 6) END AS a_end
            FROM held h
            JOIN pt_order_walk_start s ON s.account_id = h.account_id
            CROSS JOIN LATERAL (
                SELECT COALESCE((s.pos -> h.symbol ->> 0)::bigint, 0) AS q0,
                       COALESCE((s.pos -> h.symbol ->> 1)::bigint, 0) AS r0,
                       COALESCE((s.pos -> h.symbol ->> 2)::numeric, 0) AS a0
            ) p
        ), totals AS (  -- per account, if every order goes through
            SELECT i.account_id, max(i.k) AS last_k, bool_or(i.is_book) AS book,
                   COALESCE(sum(i.cost) FILTER (WHERE i.fillable AND i.side = 'buy'), 0) AS spent,
                   COALESCE(sum(i.cost) FILTER (WHERE i.fillable AND i.side = 'sell'), 0)
                       AS earned,
                   COALESCE(sum(i.open_cash) FILTER (WHERE NOT i.fillable AND i.side = 'buy'), 0)
                       AS reserving,
                   count(*) FILTER (WHERE NOT i.fillable) AS opening
            FROM pt_order_walk_in i
            GROUP BY i.account_id
        ), fast AS (
            SELECT t.*, s.cash, s.reserved, s.pos
            FROM totals t
            JOIN pt_order_walk_start s ON s.account_id = t.account_id
            WHERE NOT t.book
              AND t.spent + t.reserving <= s.cash - s.reserved
              AND (t.opening = 0 OR s.opens + t.opening <= p_max_open)
              AND NOT EXISTS (SELECT 1 FROM groups g
                              WHERE g.account_id = t.account_id AND NOT g.simple)
        ), moved AS (  -- the fast accounts' symbols afterwards
            SELECT g.account_id,
                   jsonb_object_agg(g.symbol, jsonb_build_array(
                       g.q0 + g.bought - g.sold, g.r0 + g.offered, g.a_end)) AS pos
            FROM groups g
            WHERE g.account_id IN (SELECT f.account_id FROM fast f)
            GROUP BY g.account_id
        ), ends AS MATERIALIZED (  -- per fast account and symbol: all its rows need
            SELECT g.account_id, g.symbol, g.a0, f.last_k,
                   f.cash - f.spent + f.earned AS cash, f.reserved + f.reserving AS reserved,
                   f.pos || m.pos AS pos
            FROM fast f
            JOIN moved m ON m.account_id = f.account_id
            JOIN groups g ON g.account_id = f.account_id
        )
        SELECT i.account_id, i.k, i.idx,
               CASE WHEN i.fillable THEN 'filled' ELSE 'open' END, 0, '',
               CASE WHEN i.fillable THEN i.cost END,
               CASE WHEN i.fillable AND i.side = 'sell'
                    THEN i.cost - round(i.quantity * e.a0, 2) END,
               CASE WHEN NOT i.fillable AND i.side = 'buy' THEN i.open_cash ELSE 0 END,
               CASE WHEN NOT i.fillable AND i.side = 'sell' THEN i.quantity ELSE 0 END,
               e.cash, e.reserved,
               -- the positions are read from each account's last row only
               CASE WHEN i.k = e.last_k THEN e.pos ELSE '{}'::jsonb END
        FROM ends e
        JOIN pt_order_walk_in i ON i.account_id = e.account_id AND i.symbol = e.symbol;
    END IF;

    -- Step k + 1 of every other account at once. Per order: release what a book order had
    -- reserved, then fill it (cash or units permitting), let it wait with its
    -- reservation, or refuse it (changing nothing).
    INSERT INTO pt_order_walk_out
    WITH RECURSIVE walk AS (
        SELECT s.account_id, 0 AS k, s.cash, s.reserved, s.opens, s.pos,
               0 AS idx, ''::text AS status, 0 AS code, ''::text AS reason,
               NULL::numeric AS amount, NULL::numeric AS realized,
               0::numeric AS res_cash, 0::bigint AS res_qty
        FROM pt_order_walk_start s
        WHERE NOT EXISTS (SELECT 1 FROM pt_order_walk_out f
                          WHERE f.account_id = s.account_id)  -- the fast ones are done
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
