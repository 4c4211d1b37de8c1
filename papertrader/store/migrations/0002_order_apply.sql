-- 0002_order_apply: applying queued orders exactly once (spec 3.1.7).
--
-- The master drains the Redis order queue once per update interval and hands
-- the batch, sorted by the workers' timestamps, to pt_apply_orders in one call.
-- Each order is validated and applied with its cash, position and history
-- change together. An order id that was already decided (filled: in
-- transactions; rejected: in rejected_orders) is not applied again: its first
-- outcome is returned with replayed = true. That is what makes a master killed
-- mid-drain safe to restart: it re-reads its unacknowledged orders and gets
-- the same answers without changing anything.
--
-- Codes match papertrader.protocol.errors.ErrorCode.

CREATE TABLE rejected_orders (
    order_id    UUID PRIMARY KEY,
    account_id  BIGINT NOT NULL,
    side        TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    quantity    BIGINT NOT NULL,
    code        INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    received_at TIMESTAMPTZ,
    decided_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE FUNCTION pt_apply_orders(batch JSONB)
RETURNS TABLE (
    order_id    UUID,
    status      TEXT,
    code        INTEGER,
    reason      TEXT,
    price       NUMERIC,
    amount      NUMERIC,
    executed_at TIMESTAMPTZ,
    replayed    BOOLEAN
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    o        RECORD;
    v_seen   UUID[];
    v_amount NUMERIC;
    v_cash   NUMERIC;
    v_held   BIGINT;
    v_code   INTEGER;
    v_reason TEXT;
BEGIN
    -- Ids decided before, found with one index scan for the whole batch; in the
    -- normal case (no crash) this is empty and costs nothing per order.
    SELECT array_agg(d.id) INTO v_seen FROM (
        SELECT t.order_id AS id FROM transactions t
        WHERE t.order_id IN (SELECT (e->>'order_id')::UUID FROM jsonb_array_elements(batch) e)
        UNION ALL
        SELECT r.order_id FROM rejected_orders r
        WHERE r.order_id IN (SELECT (e->>'order_id')::UUID FROM jsonb_array_elements(batch) e)
    ) d;

    FOR o IN
        SELECT * FROM jsonb_to_recordset(batch) AS x(
            order_id UUID, account_id BIGINT, side TEXT, symbol TEXT, quantity BIGINT,
            price NUMERIC, received_at TIMESTAMPTZ, client_ip INET, executed_at TIMESTAMPTZ)
    LOOP
        IF v_seen IS NOT NULL AND o.order_id = ANY (v_seen) THEN
            -- Decided before: return the first outcome, change nothing.
            RETURN QUERY
                SELECT t.order_id, 'filled'::TEXT, 0, ''::TEXT, t.price, t.amount,
                       t.executed_at, TRUE
                FROM transactions t WHERE t.order_id = o.order_id
                UNION ALL
                SELECT r.order_id, 'rejected'::TEXT, r.code, r.reason, NULL::NUMERIC,
                       NULL::NUMERIC, r.decided_at, TRUE
                FROM rejected_orders r WHERE r.order_id = o.order_id;
            CONTINUE;
        END IF;

        v_code := NULL;
        SELECT a.cash INTO v_cash FROM accounts a WHERE a.id = o.account_id FOR UPDATE;
        IF NOT FOUND THEN
            v_code := 112; v_reason := 'account does not exist';
        ELSIF o.side IS NULL OR o.side NOT IN ('buy', 'sell') THEN
            v_code := 9; v_reason := format('side %s is neither buy nor sell', o.side);
        ELSIF o.quantity IS NULL OR o.quantity <= 0 THEN
            v_code := 109; v_reason := 'quantity must be a whole number of at least 1';
        ELSIF o.price IS NULL THEN
            v_code := 108; v_reason := format('no price for %s this interval', o.symbol);
        END IF;

        IF v_code IS NULL THEN
            v_amount := round(o.quantity * o.price, 2);
            IF o.side = 'buy' THEN
                IF v_cash < v_amount THEN
                    v_code := 110;
                    v_reason := format('buying %s %s at %s costs %s; cash is %s',
                                       o.quantity, o.symbol, o.price, v_amount, v_cash);
                ELSE
                    UPDATE accounts SET cash = cash - v_amount WHERE id = o.account_id;
                    INSERT INTO positions AS p (account_id, symbol, quantity, average_price)
                    VALUES (o.account_id, o.symbol, o.quantity, o.price)
                    ON CONFLICT (account_id, symbol) DO UPDATE
                    SET average_price = round(
                            (p.quantity * p.average_price + EXCLUDED.quantity * EXCLUDED.average_price)
                            / (p.quantity + EXCLUDED.quantity), 6),
                        quantity = p.quantity + EXCLUDED.quantity;
                END IF;
            ELSE
                SELECT p.quantity INTO v_held FROM positions p
                WHERE p.account_id = o.account_id AND p.symbol = o.symbol FOR UPDATE;
                v_held := COALESCE(v_held, 0);
                IF v_held < o.quantity THEN
                    v_code := 111;
                    v_reason := format('selling %s %s but %s held', o.quantity, o.symbol, v_held);
                ELSE
                    UPDATE accounts SET cash = cash + v_amount WHERE id = o.account_id;
                    IF v_held = o.quantity THEN
                        DELETE FROM positions WHERE account_id = o.account_id AND symbol = o.symbol;
                    ELSE
                        UPDATE positions SET quantity = quantity - o.quantity
                        WHERE account_id = o.account_id AND symbol = o.symbol;
                    END IF;
                END IF;
            END IF;
        END IF;

        IF v_code IS NULL THEN
            INSERT INTO transactions (order_id, account_id, side, symbol, quantity, price, amount,
                                      received_at, executed_at, client_ip)
            VALUES (o.order_id, o.account_id, o.side, o.symbol, o.quantity, o.price, v_amount,
                    o.received_at, o.executed_at, o.client_ip);
            RETURN QUERY SELECT o.order_id, 'filled'::TEXT, 0, ''::TEXT, o.price, v_amount,
                                o.executed_at, FALSE;
        ELSE
            INSERT INTO rejected_orders (order_id, account_id, side, symbol, quantity, code, reason,
                                         received_at, decided_at)
            VALUES (o.order_id, o.account_id, COALESCE(o.side, ''), COALESCE(o.symbol, ''),
                    COALESCE(o.quantity, 0), v_code, v_reason, o.received_at, o.executed_at);
            RETURN QUERY SELECT o.order_id, 'rejected'::TEXT, v_code, v_reason, NULL::NUMERIC,
                                NULL::NUMERIC, o.executed_at, FALSE;
        END IF;
    END LOOP;
END;
$$;
