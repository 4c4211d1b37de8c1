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
    o          JSONB;
    v_order    UUID;
    v_account  BIGINT;
    v_side     TEXT;
    v_symbol   TEXT;
    v_qty      BIGINT;
    v_price    NUMERIC;
    v_amount   NUMERIC;
    v_cash     NUMERIC;
    v_held     BIGINT;
    v_avg      NUMERIC;
    v_when     TIMESTAMPTZ;
    v_received TIMESTAMPTZ;
    v_ip       INET;
    v_code     INTEGER;
    v_reason   TEXT;
BEGIN
    FOR o IN SELECT value FROM jsonb_array_elements(batch) LOOP
        v_order    := (o->>'order_id')::UUID;
        v_account  := (o->>'account_id')::BIGINT;
        v_side     := o->>'side';
        v_symbol   := o->>'symbol';
        v_qty      := (o->>'quantity')::BIGINT;
        v_price    := (o->>'price')::NUMERIC;
        v_when     := (o->>'executed_at')::TIMESTAMPTZ;
        v_received := (o->>'received_at')::TIMESTAMPTZ;
        v_ip       := (o->>'client_ip')::INET;
        v_code     := NULL;

        -- Decided before? Return the first outcome, change nothing.
        RETURN QUERY
            SELECT t.order_id, 'filled'::TEXT, 0, ''::TEXT, t.price, t.amount, t.executed_at, TRUE
            FROM transactions t WHERE t.order_id = v_order;
        IF FOUND THEN CONTINUE; END IF;
        RETURN QUERY
            SELECT r.order_id, 'rejected'::TEXT, r.code, r.reason, NULL::NUMERIC, NULL::NUMERIC,
                   r.decided_at, TRUE
            FROM rejected_orders r WHERE r.order_id = v_order;
        IF FOUND THEN CONTINUE; END IF;

        SELECT a.cash INTO v_cash FROM accounts a WHERE a.id = v_account FOR UPDATE;
        IF NOT FOUND THEN
            v_code := 112; v_reason := 'account does not exist';
        ELSIF v_side NOT IN ('buy', 'sell') THEN
            v_code := 9; v_reason := format('side %s is neither buy nor sell', v_side);
        ELSIF v_qty IS NULL OR v_qty <= 0 THEN
            v_code := 109; v_reason := 'quantity must be a whole number of at least 1';
        ELSIF v_price IS NULL THEN
            v_code := 108; v_reason := format('no price for %s this interval', v_symbol);
        END IF;

        IF v_code IS NULL THEN
            v_amount := round(v_qty * v_price, 2);
            SELECT p.quantity, p.average_price INTO v_held, v_avg
            FROM positions p WHERE p.account_id = v_account AND p.symbol = v_symbol FOR UPDATE;
            v_held := COALESCE(v_held, 0);
            IF v_side = 'buy' THEN
                IF v_cash < v_amount THEN
                    v_code := 110;
                    v_reason := format('buying %s %s at %s costs %s; cash is %s',
                                       v_qty, v_symbol, v_price, v_amount, v_cash);
                ELSE
                    UPDATE accounts SET cash = cash - v_amount WHERE id = v_account;
                    INSERT INTO positions (account_id, symbol, quantity, average_price)
                    VALUES (v_account, v_symbol, v_qty, v_price)
                    ON CONFLICT (account_id, symbol) DO UPDATE
                    SET average_price = round(
                            (positions.quantity * positions.average_price + EXCLUDED.quantity * EXCLUDED.average_price)
                            / (positions.quantity + EXCLUDED.quantity), 6),
                        quantity = positions.quantity + EXCLUDED.quantity;
                END IF;
            ELSE
                IF v_held < v_qty THEN
                    v_code := 111;
                    v_reason := format('selling %s %s but %s held', v_qty, v_symbol, v_held);
                ELSE
                    UPDATE accounts SET cash = cash + v_amount WHERE id = v_account;
                    IF v_held = v_qty THEN
                        DELETE FROM positions WHERE account_id = v_account AND symbol = v_symbol;
                    ELSE
                        UPDATE positions SET quantity = quantity - v_qty
                        WHERE account_id = v_account AND symbol = v_symbol;
                    END IF;
                END IF;
            END IF;
        END IF;

        IF v_code IS NULL THEN
            INSERT INTO transactions (order_id, account_id, side, symbol, quantity, price, amount,
                                      received_at, executed_at, client_ip)
            VALUES (v_order, v_account, v_side, v_symbol, v_qty, v_price, v_amount,
                    v_received, v_when, v_ip);
            RETURN QUERY SELECT v_order, 'filled'::TEXT, 0, ''::TEXT, v_price, v_amount, v_when, FALSE;
        ELSE
            INSERT INTO rejected_orders (order_id, account_id, side, symbol, quantity, code, reason,
                                         received_at, decided_at)
            VALUES (v_order, v_account, COALESCE(v_side, ''), COALESCE(v_symbol, ''),
                    COALESCE(v_qty, 0), v_code, v_reason, v_received, v_when);
            RETURN QUERY SELECT v_order, 'rejected'::TEXT, v_code, v_reason, NULL::NUMERIC,
                                NULL::NUMERIC, v_when, FALSE;
        END IF;
    END LOOP;
END;
$$;
