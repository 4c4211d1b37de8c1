-- 0004_accounts: more than one way into an account (issue 12, spec 3.1.3).
--
-- * account_identities: the OpenID Connect sign-ins linked to an account. An
--   identity is (issuer, subject): the provider's stable id of the person,
--   never the e-mail address, which a provider may let its users change.
-- * account_codes: one-time codes mailed to the owner (password reset, e-mail
--   verification). Only the SHA-256 of a code is stored: a copy of the table
--   opens nothing. A code is used at most once (used_at) and expires.
-- * retired_usernames: the names of deleted accounts, kept from re-use until
--   retired_until, so nobody can pose as a deleted user straight away.
-- * accounts.email_verified: set when a provider or a mailed code proved it.

ALTER TABLE accounts ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE accounts ADD COLUMN password_changed_at TIMESTAMPTZ;

CREATE TABLE account_identities (
    id            BIGSERIAL PRIMARY KEY,
    account_id    BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    provider      TEXT NOT NULL,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    email         TEXT NOT NULL DEFAULT '',
    linked_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_login_at TIMESTAMPTZ,
    CONSTRAINT account_identities_subject UNIQUE (issuer, subject),
    -- one identity per provider and account: linking a second Google login to the
    -- same account would make "unlink google" ambiguous
    CONSTRAINT account_identities_one_per_provider UNIQUE (account_id, provider),
    CONSTRAINT account_identities_subject_length CHECK (char_length(subject) BETWEEN 1 AND 255)
);

CREATE TABLE account_codes (
    code_hash  BYTEA PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL,
    email      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    CONSTRAINT account_codes_purpose CHECK (purpose IN ('reset', 'verify')),
    CONSTRAINT account_codes_hash_length CHECK (octet_length(code_hash) = 32)
);
CREATE INDEX account_codes_account_idx ON account_codes (account_id, purpose);

CREATE TABLE retired_usernames (
    username_lower TEXT PRIMARY KEY,
    retired_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_until  TIMESTAMPTZ NOT NULL
);
