-- 0003_worker_pinning: a worker links only as what it was registered as (issue 10).
--
-- `pt workers register NAME --address HOST:PORT --region R` records the address
-- clients are told to use and the region; the master refuses a LINK_HELLO that
-- differs (so a compromised worker cannot advertise a phishing address in every
-- client's getWorkerList). Workers registered before this migration have no
-- address yet: the master refuses them, naming the command that pins one, until
-- an operator (or `pt up`, or the Ansible worker role) registers them again.
ALTER TABLE workers ADD COLUMN advertise_address TEXT;
