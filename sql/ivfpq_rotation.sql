-- ivfpq_rotation: managed partitions.  ivfpq_manage adopts existing
-- partitions and runs a first rotation; ivfpq_rotate creates partitions
-- ahead (premake), drops them after retention (never one still current),
-- builds an ivfpq index on every partition (new ones copy the codebooks of
-- the newest trained partition), is idempotent, and refuses bad arguments
-- and non-owners with SQLSTATEs.  Every call passes an explicit now.
SET client_min_messages = warning;
SET TimeZone = 'UTC';
\set VERBOSITY sqlstate
\set SHOW_CONTEXT never

-- Run a statement and show its error as "SQLSTATE: message".
CREATE FUNCTION rot_error(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- Partitions of a table with their range and ivfpq index (NULL if none).
CREATE FUNCTION rot_partitions(parent regclass)
RETURNS TABLE (partition text, range_from timestamptz, range_to timestamptz, index text) LANGUAGE sql AS $$
	SELECT b.partition::text, b.range_from, b.range_to,
		   (SELECT string_agg(x.indexrelid::regclass::text, ',') FROM pg_index x
			JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'ivfpq'
			WHERE x.indrelid = b.partition)
	FROM ivfpq_partition_bounds(parent) b ORDER BY b.range_from
$$;

-- A day of 4-dimensional vectors for the partition starting at day.
CREATE FUNCTION rot_rows(day timestamptz, n int) RETURNS TABLE (at timestamptz, e vector) LANGUAGE sql AS $$
	SELECT day + i * interval '1 minute', ARRAY[i % 7, i % 5, (i * 3) % 11, i % 2]::vector
	FROM generate_series(1, n) i
$$;

CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL, e vector(4), note text)
	PARTITION BY RANGE (at);
-- two partitions made by hand before the table is managed: one with rows and
-- no index, one with its own ivfpq index
CREATE TABLE events_adopted PARTITION OF events FOR VALUES FROM ('2026-11-18') TO ('2026-11-19');
INSERT INTO events (at, e) SELECT * FROM rot_rows('2026-11-18', 300);
CREATE TABLE events_by_hand PARTITION OF events FOR VALUES FROM ('2026-11-19') TO ('2026-11-20');
CREATE INDEX events_by_hand_idx ON events_by_hand USING ivfpq (e) WITH (lists = 2, m = 2);

-- bad arguments
CREATE TABLE plain (at timestamptz, e vector(4));
CREATE TABLE by_list (at timestamptz, e vector(4)) PARTITION BY LIST (at);
CREATE TABLE by_two (at timestamptz, id int, e vector(4)) PARTITION BY RANGE (at, id);
CREATE TABLE by_int (at int, e vector(4)) PARTITION BY RANGE (at);
CREATE TABLE no_vector (at timestamptz, e real[]) PARTITION BY RANGE (at);
CREATE TABLE two_vectors (at timestamptz, e vector(4), f vector(4)) PARTITION BY RANGE (at);
CREATE TABLE by_date (day date, e vector(4)) PARTITION BY RANGE (day);
SELECT rot_error($$SELECT ivfpq_manage('plain', 'at')$$) AS not_partitioned;
SELECT rot_error($$SELECT ivfpq_manage('by_list', 'at')$$) AS list_partitioned;
SELECT rot_error($$SELECT ivfpq_manage('by_two', 'at')$$) AS two_key_columns;
SELECT rot_error($$SELECT ivfpq_manage('events', 'id')$$) AS other_column;
SELECT rot_error($$SELECT ivfpq_manage('events', 'nothing')$$) AS missing_column;
SELECT rot_error($$SELECT ivfpq_manage('by_int', 'at')$$) AS integer_key;
SELECT rot_error($$SELECT ivfpq_manage('no_vector', 'at')$$) AS no_vector;
SELECT rot_error($$SELECT ivfpq_manage('two_vectors', 'at')$$) AS two_vectors;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', vector_column => 'note')$$) AS not_a_vector;
SELECT rot_error($$SELECT ivfpq_manage(NULL, 'at')$$) AS null_parent;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', interval '0')$$) AS zero_interval;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', interval '-1 day')$$) AS negative_interval;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', interval '1 mon 1 day')$$) AS mixed_interval;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', interval '1.5 seconds')$$) AS fractional_interval;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', NULL)$$) AS null_interval;
SELECT rot_error($$SELECT ivfpq_manage('by_date', 'day', interval '6 hours')$$) AS date_needs_days;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', premake => -1)$$) AS negative_premake;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', premake => NULL)$$) AS null_premake;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', retention => '-1 day')$$) AS negative_retention;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', index_options => 'lists = 2); DROP TABLE plain; --')$$) AS injected_options;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', index_options => 'lists = 2, lists = 3')$$) AS duplicate_option;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', index_options => 'codebooks_from = x')$$) AS codebooks_from_option;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', opclass => 'vector_nope_ops')$$) AS unknown_opclass;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', now => 'infinity')$$) AS infinite_now;
SELECT rot_error($$SELECT ivfpq_rotate('events', '2026-11-20')$$) AS rotate_unmanaged;
SELECT rot_error($$SELECT ivfpq_unmanage('events')$$) AS unmanage_unmanaged;
SELECT count(*) AS nothing_registered FROM ivfpq_partitioned_tables;
SELECT count(*) AS nothing_created FROM pg_class WHERE relname LIKE 'events_p%';

-- manage: adopt both partitions (index the one without), then create the
-- current day and two ahead; the new current day copies the codebooks of
-- the adopted day, trained on its 300 rows
SELECT action, partition, range_from, range_to, detail
FROM ivfpq_manage('events', 'at', premake => 2, retention => '2 days', index_options => 'lists = 2, m = 2',
				  now => '2026-11-20 10:00+00');
SELECT parent, time_column, partition_interval, premake, retention, vector_column, opclass, index_options,
	   inherit_codebooks
FROM ivfpq_partitioned_tables;
SELECT * FROM rot_partitions('events');
SELECT trained, inherited FROM ivfpq_index_stats('events_adopted_e_ivfpq');
SELECT trained, inherited, rows FROM ivfpq_index_stats('events_p20261120_e_ivfpq');

-- idempotent: the same rotation again does nothing, so does a later one
-- within the same day
SELECT * FROM ivfpq_rotate('events', '2026-11-20 10:00+00');
SELECT * FROM ivfpq_rotate('events', '2026-11-20 23:59:59+00');
SELECT * FROM ivfpq_rotate(now => '2026-11-20 12:00+00');

-- today's empty partition has a trained index: a row inserted now is found
-- through it
INSERT INTO events (at, e, note) VALUES ('2026-11-20 11:00+00', '[3,1,4,1]', 'fresh');
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT note FROM events_p20261120 ORDER BY e <-> '[3,1,4,1]' LIMIT 1;
SELECT note FROM events_p20261120 ORDER BY e <-> '[3,1,4,1]' LIMIT 1;
RESET enable_seqscan;

-- a day later: one more partition ahead, the adopted day (ended 11-19 00:00)
-- is past the 2 days of retention
SELECT action, partition, range_from, range_to, detail FROM ivfpq_rotate('events', '2026-11-21 00:00+00');
SELECT * FROM ivfpq_rotate('events', '2026-11-21 00:00+00');
SELECT partition, range_from FROM rot_partitions('events');

-- sealed partitions at a given time, for the background worker
SELECT parent, partition, range_from, range_to, index FROM ivfpq_sealed_partitions('2026-11-21 00:00+00');

-- retention 0 drops every partition that has ended, never the current one
-- (11-21) nor those ahead; re-managing updates the configuration
SELECT action, partition, range_from, range_to FROM ivfpq_manage('events', 'at', premake => 2, retention => '0',
	index_options => 'lists = 2, m = 2', now => '2026-11-21 12:00+00');
SELECT retention FROM ivfpq_partitioned_tables;
SELECT partition, range_from, range_to FROM rot_partitions('events');
-- a partition ends exactly at now: it has ended, so it goes
SELECT action, partition FROM ivfpq_rotate('events', '2026-11-22 00:00+00');

-- a table that is not a partition but has the next partition's name
CREATE TABLE events_p20261125 (at timestamptz, e vector(4));
SELECT rot_error($$SELECT ivfpq_rotate('events', '2026-11-23 00:00+00')$$) AS name_taken;
-- rotating every table: the failure is a WARNING and a row, not an error
SELECT parent, action, detail FROM ivfpq_rotate(now => '2026-11-23 00:00+00');
DROP TABLE events_p20261125;
SELECT action, partition FROM ivfpq_rotate(now => '2026-11-23 00:00+00');

-- bad arguments to rotate
SELECT rot_error($$SELECT ivfpq_rotate('events', NULL)$$) AS null_now;
SELECT rot_error($$SELECT ivfpq_rotate(NULL, '-infinity')$$) AS infinite_now;
SELECT rot_error($$SELECT ivfpq_rotate('plain', '2026-11-23')$$) AS rotate_unmanaged;
SELECT rot_error($$SELECT ivfpq_rotate('nonexistent', '2026-11-23')$$) AS rotate_missing;
SELECT rot_error($$SELECT ivfpq_sealed_partitions(NULL)$$) AS sealed_null_now;

-- other roles: a non-owner can neither manage, rotate nor unmanage, nor
-- write the configuration directly; rotating "every table" skips tables
-- it does not own
CREATE ROLE rot_stranger;
CREATE ROLE rot_owner;
GRANT CREATE ON SCHEMA public TO rot_owner;
SET ROLE rot_stranger;
SELECT rot_error($$SELECT ivfpq_manage('events', 'at', now => '2026-11-23')$$) AS stranger_manage;
SELECT rot_error($$SELECT ivfpq_rotate('events', '2026-11-30')$$) AS stranger_rotate;
SELECT rot_error($$SELECT ivfpq_unmanage('events')$$) AS stranger_unmanage;
SELECT rot_error($$INSERT INTO ivfpq_partitioned_tables SELECT * FROM ivfpq_partitioned_tables$$) AS stranger_insert;
SELECT count(*) AS stranger_rotates_nothing FROM ivfpq_rotate(now => '2026-11-30');
SELECT count(*) AS stranger_reads_config FROM ivfpq_partitioned_tables;
RESET ROLE;
SET SESSION AUTHORIZATION rot_stranger;
SELECT rot_error($$SELECT ivfpq_partition_config_save(t) FROM ivfpq_partitioned_tables t$$) AS stranger_save;
SELECT rot_error($$SELECT ivfpq_partition_config_delete('events')$$) AS stranger_delete;
RESET SESSION AUTHORIZATION;
-- an owner manages its own table; its partitions stay its own even when a
-- superuser (say the pg_cron job's owner) rotates them
SET ROLE rot_owner;
CREATE TABLE owned (at timestamptz NOT NULL, e vector(4)) PARTITION BY RANGE (at);
SELECT action, partition FROM ivfpq_manage('owned', 'at', premake => 0, inherit_codebooks => false,
										   now => '2026-11-20 10:00+00');
RESET ROLE;
SELECT action, partition FROM ivfpq_rotate('owned', '2026-11-21 10:00+00');
SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c
WHERE c.relname LIKE 'owned_p%' ORDER BY 1;

-- other intervals: names carry the time below a day, months start on the
-- first, a date column works in days
CREATE TABLE hourly (at timestamp NOT NULL, e vector(4)) PARTITION BY RANGE (at);
SELECT action, partition, range_from, range_to FROM ivfpq_manage('hourly', 'at', interval '6 hours', premake => 1,
	inherit_codebooks => false, now => '2026-11-20 13:30+00');
SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'hourly_p20261120_1200';
CREATE TABLE monthly (at timestamptz NOT NULL, e vector(4)) PARTITION BY RANGE (at);
SELECT action, partition, range_from, range_to FROM ivfpq_manage('monthly', 'at', interval '1 mon', premake => 1,
	inherit_codebooks => false, now => '2026-12-31 23:00+00');
SELECT action, partition, range_from, range_to FROM ivfpq_manage('by_date', 'day', interval '7 days', premake => 0,
	inherit_codebooks => false, now => '2026-11-20 10:00+00');
SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'by_date_p20261116';
-- two vector columns: name one
SELECT action, partition, detail FROM ivfpq_manage('two_vectors', 'at', premake => 0, vector_column => 'f',
	opclass => 'vector_cosine_ops', inherit_codebooks => false, now => '2026-11-20');
SELECT indexrelid::regclass, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'two_vectors_p20261120'::regclass;

-- filter columns (0.4): every partition's index has them after the vector,
-- and a filtered query over the parent filters in each partition's scan
CREATE TABLE tagged (at timestamptz NOT NULL, category int, price float8, note text, e vector(4))
	PARTITION BY RANGE (at);
SELECT rot_error($$SELECT ivfpq_manage('tagged', 'at', filter_columns => '{nothing}')$$) AS missing_filter_column;
SELECT rot_error($$SELECT ivfpq_manage('tagged', 'at', filter_columns => '{note}')$$) AS text_filter_column;
SELECT rot_error($$SELECT ivfpq_manage('tagged', 'at', filter_columns => '{e}')$$) AS vector_as_filter;
SELECT rot_error($$SELECT ivfpq_manage('tagged', 'at', filter_columns => '{category,category}')$$) AS twice;
SELECT rot_error($$SELECT ivfpq_manage('tagged', 'at', filter_columns => '{category,NULL}')$$) AS null_filter_column;
SELECT action, partition FROM ivfpq_manage('tagged', 'at', premake => 1, inherit_codebooks => false,
	filter_columns => '{category,price}', now => '2026-11-20 10:00+00');
SELECT filter_columns FROM ivfpq_partitioned_tables WHERE parent = 'tagged'::regclass;
SELECT indexrelid::regclass, pg_get_indexdef(indexrelid) FROM pg_index
	WHERE indrelid IN ('tagged_p20261120'::regclass, 'tagged_p20261121'::regclass) ORDER BY 1::text;
INSERT INTO tagged SELECT timestamptz '2026-11-20 00:00+00' + i * interval '1 minute', i % 10, i * 0.5, NULL,
	ARRAY[sin(i), cos(i), sin(2 * i), cos(3 * i)]::vector FROM generate_series(1, 2000) i;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT category FROM tagged WHERE category = 3 ORDER BY e <-> '[1,0,0,1]' LIMIT 5;
SELECT count(*), bool_and(category = 3) FROM (SELECT category FROM tagged WHERE category = 3
	ORDER BY e <-> '[1,0,0,1]' LIMIT 50) s;
RESET enable_seqscan;
-- re-managed without them, new partitions get the vector alone
SELECT action, partition FROM ivfpq_manage('tagged', 'at', premake => 2, inherit_codebooks => false,
	now => '2026-11-20 10:00+00');
SELECT filter_columns IS NULL AS none FROM ivfpq_partitioned_tables WHERE parent = 'tagged'::regclass;
SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'tagged_p20261122'::regclass;
SELECT ivfpq_unmanage('tagged');
DROP TABLE tagged;

-- unmanage forgets the configuration and keeps every partition
SELECT count(*) AS partitions_before FROM ivfpq_partitions('events');
SELECT ivfpq_unmanage('events');
SELECT count(*) AS partitions_after FROM pg_inherits WHERE inhparent = 'events'::regclass;
SELECT rot_error($$SELECT ivfpq_rotate('events', '2026-11-23')$$) AS rotate_after_unmanage;
SELECT parent FROM ivfpq_partitioned_tables ORDER BY 1::text;

-- roles are cluster-wide: leave none behind
SELECT ivfpq_unmanage('owned');
DROP TABLE owned;
REVOKE CREATE ON SCHEMA public FROM rot_owner;
DROP ROLE rot_owner;
DROP ROLE rot_stranger;
