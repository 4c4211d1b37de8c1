-- 0012_book_turn: the book's turn in one call, and nothing done when nothing can happen
-- (issue 15: every order of an interval waits for the whole tick).
--
-- Before, the master ran two transactions before the new orders at every tick:
-- pt_expire_competition_orders, then pt_drain_book, whose expiry and walk over
-- the book's ready orders cost 6 to 30 ms on this machine even when the book
-- held nothing to do (mostly planning its statements over the working tables,
-- which it must plan afresh each time). pt_book_turn does both under one lock
-- in one transaction, and skips pt_drain_book when no open order can move at
-- these prices: none is past its end, none has its limit price met and none
-- has its stop reached. pt_drain_book expires, fills, marks (a stop-limit
-- reached) or rejects only orders that meet one of those three conditions, so
-- skipping it then changes nothing (tests/test_master_order_book.py runs the
-- book through both). The bodies of pt_drain_book and
-- pt_expire_competition_orders are unchanged.

CREATE FUNCTION pt_book_turn(
    p_now TIMESTAMPTZ, p_symbols TEXT[], p_prices NUMERIC[]
) RETURNS TABLE (
    ended BIGINT, filled BIGINT, rejected BIGINT, expired BIGINT, triggered BIGINT
)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_ended BIGINT;
BEGIN
    PERFORM pt_lock_book();
    v_ended := pt_expire_competition_orders(p_now);
    IF NOT EXISTS (
        SELECT 1 FROM orders o
        WHERE o.status = 'open' AND o.expires_at <= p_now
    ) AND NOT EXISTS (
        SELECT 1
        FROM orders o
        JOIN unnest(p_symbols, p_prices) AS x(symbol, mark) ON x.symbol = o.symbol
        WHERE o.status = 'open'
          AND ((o.order_type IN ('limit', 'stop_limit')
                AND CASE WHEN o.side = 'buy' THEN x.mark <= o.limit_price
                         ELSE x.mark >= o.limit_price END)
               OR (o.order_type IN ('stop', 'stop_limit')
                   AND CASE WHEN o.side = 'buy' THEN x.mark >= o.stop_price
                            ELSE x.mark <= o.stop_price END))
    ) THEN
        RETURN QUERY SELECT v_ended, 0::BIGINT, 0::BIGINT, 0::BIGINT, 0::BIGINT;
        RETURN;
    END IF;
    PERFORM pt_order_tables();  -- the walk's working tables
    RETURN QUERY
    SELECT v_ended, b.filled, b.rejected, b.expired, b.triggered
    FROM pt_drain_book(p_now, p_symbols, p_prices) b;
END;
$$;
