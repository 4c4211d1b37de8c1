-- 0006_profiles: portfolios are private unless their owner makes them public.
--
-- Another user's positions, history and details are shown only for a public
-- profile; to a stranger a private user and a user who does not exist look the
-- same (papertrader/master/portfolio.py).
ALTER TABLE accounts ADD COLUMN public_profile BOOLEAN NOT NULL DEFAULT FALSE;
