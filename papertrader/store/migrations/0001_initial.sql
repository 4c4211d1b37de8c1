-- 0001_initial: the tables of spec section 2.4 that live in PostgreSQL.
--
-- Sessions live in Redis (shared by all workers) and log entries in log files,
-- so neither has a table. Money is exact decimal, never a float type: cash and
-- amounts NUMERIC(20,2), prices NUMERIC(20,6). The CHECK constraints are the
-- last line of defence: a bug elsewhere must not be able to give an account
-- negative cash or a negative position.

-- 2.4.1 Account. Third-party accounts (e.g. Google login, spec 3.1.3) have
-- is_password = FALSE and an empty hash; a password account must have a hash.
CREATE TABLE accounts (
    id            BIGSERIAL PRIMARY KEY,
    username      VARCHAR(24)  NOT NULL UNIQUE,
    email         VARCHAR(321) NOT NULL UNIQUE,
    is_password   BOOLEAN      NOT NULL DEFAULT TRUE,
    password_hash TEXT         NOT NULL DEFAULT '',
    cash          NUMERIC(20, 2) NOT NULL,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT accounts_username_length CHECK (char_length(username) BETWEEN 1 AND 24),
    CONSTRAINT accounts_email_not_empty CHECK (char_length(email) >= 1),
    CONSTRAINT accounts_password_hash_present CHECK (NOT is_password OR password_hash <> ''),
    CONSTRAINT accounts_cash_not_negative CHECK (cash >= 0)
);
-- "Alice" and "alice" are one user; likewise for e-mail addresses.
CREATE UNIQUE INDEX accounts_username_lower_key ON accounts (lower(username));
CREATE UNIQUE INDEX accounts_email_lower_key ON accounts (lower(email));

-- Portfolio of an account: one row per symbol held.
CREATE TABLE positions (
    account_id    BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    symbol        VARCHAR(12) NOT NULL,
    quantity      BIGINT NOT NULL,
    average_price NUMERIC(20, 6) NOT NULL,
    PRIMARY KEY (account_id, symbol),
    CONSTRAINT positions_quantity_not_negative CHECK (quantity >= 0),
    CONSTRAINT positions_average_price_not_negative CHECK (average_price >= 0)
);

-- Transaction history (spec 3.1.7): one row per executed order. order_id is
-- UNIQUE so applying the same queued order twice is refused (idempotent apply).
-- received_at is the worker's stamp; executed_at is when the order went through.
CREATE TABLE transactions (
    id          BIGSERIAL PRIMARY KEY,
    order_id    UUID NOT NULL UNIQUE,
    account_id  BIGINT NOT NULL REFERENCES accounts (id),
    side        TEXT NOT NULL,
    symbol      VARCHAR(12) NOT NULL,
    quantity    BIGINT NOT NULL,
    price       NUMERIC(20, 6) NOT NULL,
    amount      NUMERIC(20, 2) NOT NULL,
    received_at TIMESTAMPTZ,
    executed_at TIMESTAMPTZ NOT NULL,
    client_ip   INET,
    CONSTRAINT transactions_side CHECK (side IN ('buy', 'sell')),
    CONSTRAINT transactions_quantity_positive CHECK (quantity > 0),
    CONSTRAINT transactions_price_not_negative CHECK (price >= 0),
    CONSTRAINT transactions_amount_not_negative CHECK (amount >= 0)
);
-- getUserTransactionHistory: an account's history in time order.
CREATE INDEX transactions_account_executed_idx ON transactions (account_id, executed_at);

-- 2.4.5 WorkerServer: registered workers, their GPG identity and allowed IPs.
CREATE TABLE workers (
    id              BIGSERIAL PRIMARY KEY,
    uuid            UUID NOT NULL UNIQUE,
    name            TEXT NOT NULL UNIQUE,
    gpg_public_key  TEXT NOT NULL,
    gpg_fingerprint TEXT NOT NULL,
    allowed_ips     CIDR[] NOT NULL DEFAULT '{}',
    region          TEXT,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    registered_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at    TIMESTAMPTZ
);

-- 2.4.3 Asset: the instruments that can be traded.
CREATE TABLE assets (
    symbol   VARCHAR(12) PRIMARY KEY,
    name     TEXT,
    currency TEXT NOT NULL DEFAULT 'USD'
);

-- 2.4.3 Asset values (open/high/low/close/volume) per period. The primary key
-- (symbol, period_start) is the index that serves the day/week/month/year
-- range reads of getAssetValue*.
CREATE TABLE asset_bars (
    symbol       VARCHAR(12) NOT NULL,
    period_start TIMESTAMPTZ NOT NULL,
    open         NUMERIC(20, 6) NOT NULL,
    high         NUMERIC(20, 6) NOT NULL,
    low          NUMERIC(20, 6) NOT NULL,
    close        NUMERIC(20, 6) NOT NULL,
    volume       BIGINT NOT NULL,
    PRIMARY KEY (symbol, period_start),
    CONSTRAINT asset_bars_volume_not_negative CHECK (volume >= 0)
);
