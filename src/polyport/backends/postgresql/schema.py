"""The stores' tables (and the event log's functions), created by the first node to open them.

``{schema}`` stands for the stores' schema (a name checked by
:class:`~polyport.backends.postgresql.db.PostgresDatabase`). Each script is
run by :meth:`~polyport.backends.postgresql.db.PostgresDatabase.migrate`, so
nodes starting together take turns and every statement may run again.
"""

EVENTLOG_DDL = """
-- The log's one row: its epoch and the last seq assigned. Updating it is the
-- lock that orders every writer of every node (see eventlog.py).
CREATE TABLE IF NOT EXISTS {schema}.eventlog (
    id integer PRIMARY KEY CHECK (id = 1),
    epoch text NOT NULL,
    seq bigint NOT NULL DEFAULT 0
);
-- One row per channel, never deleted: its epoch (so an id from any node
-- resolves on any other), its last offset, and what trimming dropped.
-- The events of a channel are always the offsets trimmed_offset+1 .. last_offset.
CREATE TABLE IF NOT EXISTS {schema}.eventlog_channels (
    name text COLLATE "C" PRIMARY KEY,
    epoch text NOT NULL UNIQUE,
    last_offset bigint NOT NULL DEFAULT 0,
    trimmed_offset bigint NOT NULL DEFAULT 0,
    trimmed_seq bigint NOT NULL DEFAULT 0
);
-- "Did a matching channel lose events after this position?" looks only at
-- the channels trimmed past it.
CREATE INDEX IF NOT EXISTS eventlog_channels_by_trimmed_seq
    ON {schema}.eventlog_channels (trimmed_seq);
CREATE TABLE IF NOT EXISTS {schema}.eventlog_events (
    seq bigint PRIMARY KEY,
    channel text COLLATE "C" NOT NULL,
    "offset" bigint NOT NULL,
    type text NOT NULL,
    time double precision NOT NULL,
    data bytea NOT NULL,
    -- Also the index of resolving an event id and of trimming a channel's oldest.
    UNIQUE (channel, "offset")
);
-- Reads: "events of this channel after this seq", oldest first.
CREATE INDEX IF NOT EXISTS eventlog_events_by_channel_seq
    ON {schema}.eventlog_events (channel, seq);
CREATE INDEX IF NOT EXISTS eventlog_events_by_time ON {schema}.eventlog_events (time);

-- A channel's epoch: 10 characters of [a-z2-7] (50 bits), as core.events.new_epoch
-- draws them, from the random bytes of a version-4 UUID (bytes 6 and 8 hold
-- its fixed version and variant bits and are left out).
CREATE OR REPLACE FUNCTION {schema}.eventlog_new_epoch() RETURNS text
LANGUAGE sql VOLATILE AS $fn$
    SELECT string_agg(
        substr('abcdefghijklmnopqrstuvwxyz234567', get_byte(r.b, i) % 32 + 1, 1), '' ORDER BY i)
    FROM (SELECT uuid_send(gen_random_uuid()) AS b) AS r,
         unnest(ARRAY[0, 1, 2, 3, 4, 5, 7, 9, 10, 11]) AS i
$fn$;

-- Trim a channel through an offset: the events go, and trimmed_offset and
-- trimmed_seq move, in one transaction. The channel's row is locked before
-- its events, as an append locks them, so a trim and an append never wait on
-- each other in a cycle; a trim locks one channel only, so two trims never do.
CREATE OR REPLACE FUNCTION {schema}.eventlog_trim(p_channel text, p_through bigint)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    held_after bigint;
    top_seq bigint;
    top_offset bigint;
    dropped bigint;
BEGIN
    SELECT trimmed_offset INTO held_after
    FROM {schema}.eventlog_channels WHERE name = p_channel FOR UPDATE;
    -- From the first event held: the index entries of events trimmed before stay
    -- until a vacuum, and starting at the channel's first would walk them all again.
    WITH gone AS (
        DELETE FROM {schema}.eventlog_events
        WHERE channel = p_channel AND "offset" > held_after AND "offset" <= p_through
        RETURNING seq, "offset"
    )
    SELECT max(gone.seq), max(gone."offset"), count(*) INTO top_seq, top_offset, dropped
    FROM gone;
    IF dropped > 0 THEN
        UPDATE {schema}.eventlog_channels
        SET trimmed_offset = greatest(trimmed_offset, top_offset),
            trimmed_seq = greatest(trimmed_seq, top_seq)
        WHERE name = p_channel;
    END IF;
    RETURN dropped;
END
$fn$;

-- Append a batch: the items' seqs, offsets and channel epochs, in order. A
-- channel left holding more than p_bound events is trimmed to its newest
-- p_keep in the same transaction. Called as one statement in autocommit, so
-- the head row's lock is held from the first UPDATE to the commit and never
-- across a round trip to a client.
CREATE OR REPLACE FUNCTION {schema}.eventlog_append(
    p_channels text[], p_types text[], p_data bytea[], p_times double precision[],
    p_keep bigint, p_bound bigint
) RETURNS TABLE (out_seq bigint, out_offset bigint, out_epoch text)
LANGUAGE plpgsql
-- Plan its statements once per connection: left to choose, PostgreSQL planned the
-- batch statement anew on every call (about 250 us of a 400 us call, under the lock).
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    n bigint := cardinality(p_channels);
    base bigint;
BEGIN
    -- Every writer waits here for the one before it to commit: seqs become
    -- visible in the order they are assigned.
    UPDATE {schema}.eventlog AS h SET seq = h.seq + n WHERE h.id = 1
        RETURNING h.seq - n INTO base;
    IF base IS NULL THEN
        RAISE EXCEPTION 'the event log in schema {schema} has no head row';
    END IF;
    -- Under that lock no other writer creates channels: the check is exact.
    INSERT INTO {schema}.eventlog_channels (name, epoch)
        SELECT d.c, {schema}.eventlog_new_epoch()
        FROM (SELECT DISTINCT unnest(p_channels)) AS d(c)
        WHERE NOT EXISTS (SELECT 1 FROM {schema}.eventlog_channels k WHERE k.name = d.c);
    RETURN QUERY
    WITH items AS (
        SELECT u.c, u.t, u.d, u.tm, u.i
        FROM unnest(p_channels, p_types, p_data, p_times) WITH ORDINALITY AS u(c, t, d, tm, i)
    ), counts AS (
        SELECT items.c, count(*) AS k FROM items GROUP BY items.c
    ), bumped AS (
        UPDATE {schema}.eventlog_channels AS ch SET last_offset = ch.last_offset + counts.k
        FROM counts WHERE ch.name = counts.c
        RETURNING ch.name, ch.epoch, ch.last_offset - counts.k AS first
    ), numbered AS (
        SELECT items.i, items.c, items.t, items.d, items.tm, b.epoch,
               b.first + row_number() OVER (PARTITION BY items.c ORDER BY items.i) AS off
        FROM items JOIN bumped AS b ON b.name = items.c
    ), written AS (
        INSERT INTO {schema}.eventlog_events (seq, channel, "offset", type, time, data)
        SELECT base + numbered.i, numbered.c, numbered.off, numbered.t, numbered.tm, numbered.d
        FROM numbered
    )
    SELECT base + numbered.i, numbered.off, numbered.epoch FROM numbered ORDER BY numbered.i;
    -- Bounded history: a channel over its bound (the bound plus some slack, so
    -- this runs once per many appends) keeps its newest p_keep events.
    PERFORM {schema}.eventlog_trim(ch.name, ch.last_offset - p_keep)
    FROM {schema}.eventlog_channels AS ch
    WHERE ch.name = ANY(p_channels) AND ch.last_offset - ch.trimmed_offset > p_bound;
END
$fn$;

INSERT INTO {schema}.eventlog (id, epoch) VALUES (1, {schema}.eventlog_new_epoch())
    ON CONFLICT (id) DO NOTHING;
"""

WORKQUEUE_DDL = """
-- One row per (queue, key) until a purge or a drop forgets it: the primary key
-- is the idempotency check of enqueue. due is when a pending row may next be
-- claimed, or when a running row's lease ends (see workqueue.py).
CREATE TABLE IF NOT EXISTS {schema}.work (
    queue text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    payload bytea NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    created double precision NOT NULL,
    due double precision NOT NULL,
    lease text,
    owner text,
    claimed double precision,
    finished double precision,
    error text,
    result bytea,
    "group" text COLLATE "C",
    waits boolean NOT NULL DEFAULT false,
    PRIMARY KEY (queue, key),
    -- A lease token exactly while running: an outcome conditional on the token
    -- alone acts only on the running claim it names (see workqueue.py). An owner
    -- only while running, if the claimer named one.
    CHECK ((status = 'running') = (lease IS NOT NULL)),
    CHECK (status = 'running' OR owner IS NULL)
);
-- Listings, newest first, paged by seq.
CREATE INDEX IF NOT EXISTS work_by_seq ON {schema}.work (queue, seq);
-- Purges: a queue's final rows by when they finished.
CREATE INDEX IF NOT EXISTS work_finished ON {schema}.work (queue, finished)
    WHERE status IN ('done', 'dead');

-- Ordering groups. A group's head is its unfinished row of the smallest seq; every
-- other unfinished row of the group waits (waits = true) and no claim reads it. A
-- table from before groups gains the columns (no group, waiting for nothing),
-- looked up first: ALTER TABLE takes the table's strongest lock even to change nothing.
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{schema}.work'::regclass
                   AND attname = 'waits' AND NOT attisdropped) THEN
        ALTER TABLE {schema}.work
            ADD COLUMN IF NOT EXISTS "group" text COLLATE "C",
            ADD COLUMN IF NOT EXISTS waits boolean NOT NULL DEFAULT false;
    END IF;
END
$do$;
-- Claims and next_due: a queue's live rows that wait for nothing, in the order they
-- are claimed in, so a claim reads its first rows and stops, however long the
-- backlog (of its groups too). It replaces work_due, of every live row.
CREATE INDEX IF NOT EXISTS work_ready ON {schema}.work (queue, due, seq)
    WHERE status IN ('pending', 'running') AND NOT waits;
DROP INDEX IF EXISTS {schema}.work_due;
-- A group's unfinished rows by seq: its head, and whether anything is before a row.
CREATE INDEX IF NOT EXISTS work_group ON {schema}.work (queue, "group", seq)
    WHERE "group" IS NOT NULL AND status IN ('pending', 'running');

-- The statements that change a group's head -- an enqueue into the group, a row of
-- it finishing, a row redriven back into it -- first take the group's turn, an
-- advisory lock held until they commit, and then read the group in the statements
-- of a function: in a volatile function, each statement takes a snapshot of its
-- own, after the turn was taken, and so sees what the holder before committed. (The
-- calling statement's snapshot was taken before it waited.) Claims take no turn:
-- they change no row's place, and check the rule themselves (see workqueue.py).
CREATE OR REPLACE FUNCTION {schema}.work_turn(p_queue text, p_group text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT hashtextextended('polyport:{schema}:work:' || p_queue || E'\\n' || p_group, 0)
$fn$;

-- Take the turns of several groups, always in the order of their locks' keys, so two
-- callers never wait for each other in a cycle; how many.
CREATE OR REPLACE FUNCTION {schema}.work_turns(p_queues text[], p_groups text[])
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    turn bigint;
    taken bigint := 0;
BEGIN
    FOR turn IN
        SELECT DISTINCT {schema}.work_turn(u.q, u.g) FROM unnest(p_queues, p_groups) AS u(q, g)
        WHERE u.g IS NOT NULL ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(turn);
        taken := taken + 1;
    END LOOP;
    RETURN taken;
END
$fn$;

-- Enqueue into a group: the row waits if the group has an unfinished row (each one
-- enqueued before it). Its seq is drawn in the group's turn, held until the commit,
-- so a group's rows become visible in seq order: with seqs drawn outside it, 11
-- could commit before 10, and run, and 10 then run beside it.
CREATE OR REPLACE FUNCTION {schema}.work_enqueue_in_group(
    p_queue text, p_key text, p_payload bytea, p_now double precision,
    p_due double precision, p_group text
) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock({schema}.work_turn(p_queue, p_group));
    INSERT INTO {schema}.work (queue, key, payload, status, created, due, "group", waits)
    SELECT p_queue, p_key, p_payload, 'pending', p_now, p_due, p_group, EXISTS (
        SELECT 1 FROM {schema}.work AS e
        WHERE e.queue = p_queue AND e."group" = p_group
          AND e.status IN ('pending', 'running'))
    ON CONFLICT (queue, key) DO NOTHING;
    RETURN FOUND;
END
$fn$;

-- Rows of these groups finished (in the caller's transaction, which holds their
-- turns): each group's head, if it has one, waits no more; how many did.
CREATE OR REPLACE FUNCTION {schema}.work_next_heads(p_queues text[], p_groups text[])
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    moved bigint;
BEGIN
    UPDATE {schema}.work AS w SET waits = false
    FROM (SELECT DISTINCT u.q, u.g FROM unnest(p_queues, p_groups) AS u(q, g)) AS g
    CROSS JOIN LATERAL (
        SELECT h.key FROM {schema}.work AS h
        WHERE h.queue = g.q AND h."group" = g.g AND h.status IN ('pending', 'running')
        ORDER BY h.seq LIMIT 1
    ) AS head
    WHERE w.queue = g.q AND w.key = head.key AND w.waits;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$fn$;

-- Redrive: a row in one of p_statuses falls due now; a dead or done one begins a
-- fresh round and, of a group, takes its place in it again: it waits for the group's
-- unfinished rows before it, or it is the head, and the head it displaced waits.
CREATE OR REPLACE FUNCTION {schema}.work_redrive(
    p_queue text, p_key text, p_now double precision, p_statuses text[]
) RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    v_group text;
    v_seq bigint;
    v_waits boolean;
BEGIN
    -- A row's group never changes, but the row may be purged and enqueued anew (with
    -- another group) between this read and the update: then read it again.
    FOR attempt IN 1..3 LOOP
        SELECT w."group" INTO v_group FROM {schema}.work AS w
        WHERE w.queue = p_queue AND w.key = p_key;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        IF v_group IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock({schema}.work_turn(p_queue, v_group));
        END IF;
        UPDATE {schema}.work AS w
        SET status = 'pending', due = p_now, finished = NULL,
            attempts = CASE WHEN w.status = 'pending' THEN w.attempts ELSE 0 END,
            result = CASE WHEN w.status = 'pending' THEN w.result END,
            waits = CASE WHEN w.status = 'pending' OR w."group" IS NULL THEN w.waits
                         ELSE EXISTS (
                             SELECT 1 FROM {schema}.work AS e
                             WHERE e.queue = w.queue AND e."group" = w."group"
                               AND e.seq < w.seq AND e.status IN ('pending', 'running'))
                    END
        WHERE w.queue = p_queue AND w.key = p_key AND w.status = ANY (p_statuses)
          AND w."group" IS NOT DISTINCT FROM v_group
        RETURNING w.seq, w.waits INTO v_seq, v_waits;
        IF FOUND THEN
            IF v_group IS NOT NULL AND NOT v_waits THEN
                UPDATE {schema}.work AS w SET waits = true
                FROM (SELECT h.key FROM {schema}.work AS h
                      WHERE h.queue = p_queue AND h."group" = v_group AND h.seq > v_seq
                        AND h.status IN ('pending', 'running')
                      ORDER BY h.seq LIMIT 1) AS displaced
                WHERE w.queue = p_queue AND w.key = displaced.key AND NOT w.waits;
            END IF;
            RETURN true;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM {schema}.work AS w WHERE w.queue = p_queue
                       AND w.key = p_key AND w."group" IS DISTINCT FROM v_group) THEN
            RETURN false;  -- there, of the same group, but in no state to redrive
        END IF;
    END LOOP;
    RETURN false;
END
$fn$;
"""

RECORDS_DDL = """
-- Versions come from one sequence for the whole store, never reset while the
-- schema lives: a key never gets a version twice, not even after a delete
-- and a new write (see records.py).
CREATE SEQUENCE IF NOT EXISTS {schema}.record_versions;
-- One row per key. COLLATE "C" compares the UTF-8 bytes: code point order,
-- the order of scans.
CREATE TABLE IF NOT EXISTS {schema}.records (
    key text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL,
    version bigint NOT NULL
);
"""
