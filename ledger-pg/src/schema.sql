-- mod_rtc_core's ledger on PostgreSQL, schema version 1 (docs/ledger-postgres.md).
-- Everything lives in the schema `rtc_ledger`. Money is in micro-units (bigint), times in µs since the epoch.
-- Every change of money happens under the account's row lock: what calls do (reserve, extend, commit, release) is
-- worked out by the node under the locks its batch takes and written set-based (ledger-pg/src/batch.rs); an
-- operator's operations (open an account, top up, adjust, import) and the settling of what nobody will settle
-- (expiry, a dead node's calls) are the functions below. Account rows are always locked before reservation rows,
-- and a transaction that locks several accounts locks them in id order (no deadlock).
-- Rows refer to accounts and reservations by id without foreign keys: every write goes through the node's batches
-- or these functions, which keep the references whole, and `rtc-core ledger check` (rtc_ledger_pg::check) proves
-- the sums; a foreign key would cost a lookup per journal row on the hot path.

CREATE TABLE rtc_ledger.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Every node that has written to this ledger, and its lease: a node whose lease ran out is taken over once.
CREATE TABLE rtc_ledger.nodes (
    id               text PRIMARY KEY,
    incarnation      bigint NOT NULL,
    state            text NOT NULL CHECK (state IN ('alive', 'stopped', 'dead')),
    lease_until_us   bigint NOT NULL,
    started_at_us    bigint NOT NULL,
    host             text NOT NULL,
    pid              integer NOT NULL,
    taken_over_by    text,
    taken_over_at_us bigint
);

CREATE TABLE rtc_ledger.accounts (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    balance       bigint NOT NULL DEFAULT 0,
    reserved      bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    credit_limit  bigint NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    open_calls    integer NOT NULL DEFAULT 0 CHECK (open_calls >= 0),
    cps_second    bigint NOT NULL DEFAULT 0,
    cps_count     integer NOT NULL DEFAULT 0,
    created_at_us bigint NOT NULL
);

-- All the nodes' calls together (open reservations, reservations in the current second): what the global limits
-- count when they are shared. One row, locked after the accounts.
CREATE TABLE rtc_ledger.totals (
    id         integer PRIMARY KEY CHECK (id = 1),
    open_calls integer NOT NULL DEFAULT 0 CHECK (open_calls >= 0),
    cps_second bigint NOT NULL DEFAULT 0,
    cps_count  integer NOT NULL DEFAULT 0
);
INSERT INTO rtc_ledger.totals(id) VALUES (1);

CREATE TABLE rtc_ledger.reservations (
    id            bigserial PRIMARY KEY,
    account       bigint NOT NULL,
    node          text NOT NULL,
    call          text NOT NULL,
    held          bigint NOT NULL CHECK (held >= 0),
    debited       bigint NOT NULL DEFAULT 0 CHECK (debited >= 0),
    state         text NOT NULL CHECK (state IN ('open', 'committed', 'released', 'expired', 'recovered')),
    extensions    integer NOT NULL DEFAULT 0,
    created_at_us bigint NOT NULL,
    updated_at_us bigint NOT NULL,
    expires_at_us bigint NOT NULL,
    settled_at_us bigint,
    settled_by    text,
    charged       bigint,
    info          text
);
CREATE INDEX reservations_open_expiry ON rtc_ledger.reservations(expires_at_us) WHERE state = 'open';
CREATE INDEX reservations_open_node ON rtc_ledger.reservations(node) WHERE state = 'open';

CREATE TABLE rtc_ledger.journal (
    seq            bigserial PRIMARY KEY,
    at_us          bigint NOT NULL,
    account        bigint NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('reserve', 'extend', 'commit', 'release', 'topup', 'adjustment',
                                                 'import', 'expiry', 'recovery')),
    balance_delta  bigint NOT NULL,
    reserved_delta bigint NOT NULL,
    balance_after  bigint NOT NULL,
    reserved_after bigint NOT NULL,
    reservation    bigint,
    call           text,
    reference      text,
    actor          text NOT NULL,
    node           text NOT NULL
);
CREATE INDEX journal_account ON rtc_ledger.journal(account, seq);
CREATE UNIQUE INDEX journal_reference ON rtc_ledger.journal(account, kind, reference)
    WHERE reference IS NOT NULL AND kind IN ('topup', 'adjustment', 'import');

CREATE FUNCTION rtc_ledger.journal_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'journal rows are immutable and never deleted';
END $$;
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON rtc_ledger.journal
    FOR EACH ROW EXECUTE FUNCTION rtc_ledger.journal_is_append_only();

CREATE TABLE rtc_ledger.cdrs (
    seq           bigserial PRIMARY KEY,
    uuid          text NOT NULL UNIQUE,
    partner       text,
    started_at_us bigint NOT NULL,
    ended_at_us   bigint NOT NULL,
    cost          bigint NOT NULL,
    reason        text,
    node          text NOT NULL,
    record        text NOT NULL
);
CREATE INDEX cdrs_ended ON rtc_ledger.cdrs(ended_at_us);

-- The answer of every operation: a code, and up to four figures whose meaning the code gives.
CREATE TYPE rtc_ledger.result AS (code text, id bigint, a bigint, b bigint, c bigint, d bigint);

-- Locks, in id order, every account a batch will touch: by name, by id, or through a reservation.
CREATE FUNCTION rtc_ledger.lock_accounts(p_names text[], p_ids bigint[], p_reservations bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE n integer;
BEGIN
    PERFORM 1 FROM rtc_ledger.accounts
     WHERE name = ANY(p_names) OR id = ANY(p_ids)
        OR id IN (SELECT account FROM rtc_ledger.reservations WHERE id = ANY(p_reservations))
     ORDER BY id FOR UPDATE;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- An account's id by id or name (NULL: none).
CREATE FUNCTION rtc_ledger.account_of(p_id bigint, p_name text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT id FROM rtc_ledger.accounts WHERE p_id IS NOT NULL AND id = p_id
    UNION ALL
    SELECT id FROM rtc_ledger.accounts WHERE p_id IS NULL AND name = p_name
$$;

-- Moves an account's money and journals it; returns the balance and reserved money after.
CREATE FUNCTION rtc_ledger.post(p_account bigint, p_kind text, p_balance bigint, p_reserved bigint,
                                p_reservation bigint, p_call text, p_reference text, p_now bigint, p_actor text,
                                p_node text, p_calls integer, OUT balance bigint, OUT reserved bigint)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rtc_ledger.accounts a
       SET balance = a.balance + p_balance, reserved = a.reserved + p_reserved, open_calls = a.open_calls + p_calls
     WHERE a.id = p_account
    RETURNING a.balance, a.reserved INTO balance, reserved;
    IF p_calls <> 0 THEN
        UPDATE rtc_ledger.totals SET open_calls = open_calls + p_calls WHERE id = 1;
    END IF;
    INSERT INTO rtc_ledger.journal(at_us, account, kind, balance_delta, reserved_delta, balance_after, reserved_after,
                                   reservation, call, reference, actor, node)
    VALUES (p_now, p_account, p_kind, p_balance, p_reserved, balance, reserved, p_reservation, p_call, p_reference,
            p_actor, p_node);
END $$;

CREATE FUNCTION rtc_ledger.open_account(p_name text, p_credit_limit bigint, p_now bigint)
RETURNS rtc_ledger.result LANGUAGE plpgsql AS $$
DECLARE acc bigint;
BEGIN
    INSERT INTO rtc_ledger.accounts(name, credit_limit, created_at_us) VALUES (p_name, p_credit_limit, p_now)
    ON CONFLICT (name) DO UPDATE SET credit_limit = EXCLUDED.credit_limit
        WHERE rtc_ledger.accounts.credit_limit <> EXCLUDED.credit_limit;
    SELECT id INTO acc FROM rtc_ledger.accounts WHERE name = p_name;
    RETURN ('opened', acc, NULL, NULL, NULL, NULL)::rtc_ledger.result;
END $$;

-- Ends an open reservation (locked by the caller): p_charged leaves the balance, the hold is freed.
-- Returns (settled, account, charged, released, excess, balance).
CREATE FUNCTION rtc_ledger.close_reservation(r rtc_ledger.reservations, p_state text, p_kind text,
                                             p_charged bigint, p_now bigint, p_actor text, p_node text)
RETURNS rtc_ledger.result LANGUAGE plpgsql AS $$
DECLARE after record;
BEGIN
    UPDATE rtc_ledger.reservations SET state = p_state, held = 0, settled_at_us = p_now, settled_by = p_node,
           charged = p_charged
     WHERE id = r.id AND state = 'open';
    IF NOT FOUND THEN
        RETURN ('unknown_reservation', r.id, NULL, NULL, NULL, NULL)::rtc_ledger.result;
    END IF;
    SELECT * INTO after FROM rtc_ledger.post(r.account, p_kind, -p_charged, -r.held, r.id, r.call, NULL, p_now,
                                             p_actor, p_node, -1);
    RETURN ('settled', r.account, p_charged, greatest(r.held - p_charged, 0), greatest(p_charged - r.held, 0),
            after.balance)::rtc_ledger.result;
END $$;

-- Stores a call's CDR; false when one for the call is there already (the first is kept).
CREATE FUNCTION rtc_ledger.store_cdr(p_uuid text, p_partner text, p_started bigint, p_ended bigint, p_cost bigint,
                                     p_reason text, p_node text, p_record text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rtc_ledger.cdrs(uuid, partner, started_at_us, ended_at_us, cost, reason, node, record)
    VALUES (p_uuid, p_partner, p_started, p_ended, p_cost, p_reason, p_node, p_record)
    ON CONFLICT (uuid) DO NOTHING;
    RETURN FOUND;
END $$;

-- A top-up or adjustment, applied once per (account, kind, reference). Codes: moved (a = balance, b = 1 when a
-- duplicate), reference_reused (a = amount it was used with), unknown_account.
CREATE FUNCTION rtc_ledger.movement(p_node text, p_id bigint, p_name text, p_amount bigint, p_reference text,
                                    p_kind text, p_now bigint, p_actor text)
RETURNS rtc_ledger.result LANGUAGE plpgsql AS $$
DECLARE
    acc rtc_ledger.accounts%ROWTYPE;
    before bigint;
    after record;
BEGIN
    IF p_id IS NOT NULL THEN
        SELECT * INTO acc FROM rtc_ledger.accounts WHERE id = p_id FOR UPDATE;
    ELSE
        SELECT * INTO acc FROM rtc_ledger.accounts WHERE name = p_name FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN ('unknown_account', NULL, NULL, NULL, NULL, NULL)::rtc_ledger.result;
    END IF;
    SELECT balance_delta INTO before FROM rtc_ledger.journal
     WHERE account = acc.id AND kind = p_kind AND reference = p_reference;
    IF FOUND THEN
        IF before <> p_amount THEN
            RETURN ('reference_reused', acc.id, before, NULL, NULL, NULL)::rtc_ledger.result;
        END IF;
        RETURN ('moved', acc.id, acc.balance, 1, NULL, NULL)::rtc_ledger.result;
    END IF;
    SELECT * INTO after FROM rtc_ledger.post(acc.id, p_kind, p_amount, 0, NULL, NULL, p_reference, p_now, p_actor,
                                             p_node, 0);
    RETURN ('moved', acc.id, after.balance, 0, NULL, NULL)::rtc_ledger.result;
END $$;

-- An opening balance, only into an account that never moved money. Codes: imported (a = 1 applied, 0 skipped).
CREATE FUNCTION rtc_ledger.import(p_node text, p_name text, p_amount bigint, p_reference text, p_now bigint,
                                  p_actor text)
RETURNS rtc_ledger.result LANGUAGE plpgsql AS $$
DECLARE acc bigint;
BEGIN
    INSERT INTO rtc_ledger.accounts(name, created_at_us) VALUES (p_name, p_now) ON CONFLICT (name) DO NOTHING;
    SELECT id INTO acc FROM rtc_ledger.accounts WHERE name = p_name FOR UPDATE;
    IF EXISTS (SELECT 1 FROM rtc_ledger.journal WHERE account = acc) THEN
        RETURN ('imported', acc, 0, NULL, NULL, NULL)::rtc_ledger.result;
    END IF;
    PERFORM rtc_ledger.post(acc, 'import', p_amount, 0, NULL, NULL, p_reference, p_now, p_actor, p_node, 0);
    RETURN ('imported', acc, 1, NULL, NULL, NULL)::rtc_ledger.result;
END $$;

-- Settles open reservations nobody will settle: those whose expiry passed (p_nodes NULL) or those of the given
-- nodes (taken over), at most p_limit, charging what was debited. Returns each one settled, with what a CDR
-- needs; the caller stores the CDRs of taken-over calls in the same transaction.
CREATE FUNCTION rtc_ledger.abandon(p_node text, p_nodes text[], p_now bigint, p_limit integer)
RETURNS TABLE (id bigint, account text, call text, charged bigint, released bigint, debited bigint,
               created_at_us bigint, updated_at_us bigint, info text)
LANGUAGE plpgsql AS $$
DECLARE
    r rtc_ledger.reservations%ROWTYPE;
    ids bigint[];
    st text := CASE WHEN p_nodes IS NULL THEN 'expired' ELSE 'recovered' END;
    kind text := CASE WHEN p_nodes IS NULL THEN 'expiry' ELSE 'recovery' END;
    res rtc_ledger.result;
BEGIN
    -- Two queries, so that each uses its partial index on open reservations (this runs every second).
    IF p_nodes IS NULL THEN
        SELECT array_agg(x.id) INTO ids FROM (
            SELECT o.id FROM rtc_ledger.reservations o
             WHERE o.state = 'open' AND o.expires_at_us <= p_now
             ORDER BY o.expires_at_us LIMIT p_limit) x;
    ELSE
        SELECT array_agg(x.id) INTO ids FROM (
            SELECT o.id FROM rtc_ledger.reservations o
             WHERE o.state = 'open' AND o.node = ANY(p_nodes)
             ORDER BY o.id LIMIT p_limit) x;
    END IF;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    PERFORM rtc_ledger.lock_accounts('{}', '{}', ids);
    FOR r IN SELECT * FROM rtc_ledger.reservations o WHERE o.id = ANY(ids) AND o.state = 'open' ORDER BY o.id
             FOR UPDATE LOOP
        res := rtc_ledger.close_reservation(r, st, kind, r.debited, p_now, kind, p_node);
        id := r.id;
        SELECT a.name INTO account FROM rtc_ledger.accounts a WHERE a.id = r.account;
        call := r.call;
        charged := res.a;
        released := res.b;
        debited := r.debited;
        created_at_us := r.created_at_us;
        updated_at_us := r.updated_at_us;
        info := r.info;
        RETURN NEXT;
    END LOOP;
END $$;

-- Renews this node's lease. Returns false when the node was taken over meanwhile (its lease had run out).
CREATE FUNCTION rtc_ledger.renew(p_node text, p_incarnation bigint, p_until bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rtc_ledger.nodes SET lease_until_us = p_until
     WHERE id = p_node AND incarnation = p_incarnation AND state = 'alive';
    RETURN FOUND;
END $$;

-- Marks every other node whose lease ran out as dead, taken over by this one, and returns their ids. Two
-- survivors running this at once: the second waits on the row lock, then finds the row no longer alive.
CREATE FUNCTION rtc_ledger.take_over(p_node text, p_now bigint)
RETURNS SETOF text LANGUAGE sql AS $$
    UPDATE rtc_ledger.nodes SET state = 'dead', taken_over_by = p_node, taken_over_at_us = p_now
     WHERE state = 'alive' AND lease_until_us < p_now AND id <> p_node
    RETURNING id
$$;
