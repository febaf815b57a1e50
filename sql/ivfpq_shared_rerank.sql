-- ivfpq.share_rerank (off by default): under a MergeAppend of N ivfpq index scans (a query
-- over a partitioned parent) each partition re-ranks ivfpq.rerank / N
-- candidates per batch (at least 10), not ivfpq.rerank: less heap work for
-- the same neighbours.
-- pad makes each row about 1 kB, so candidates fetched are pages touched
CREATE TABLE shared (id int, part int, e vector(16), pad text) PARTITION BY LIST (part);
DO $$
BEGIN
	FOR p IN 0..9 LOOP
		EXECUTE format('CREATE TABLE shared_%s PARTITION OF shared FOR VALUES IN (%s)', p, p);
		EXECUTE format('INSERT INTO shared_%s SELECT i, %s, ARRAY(SELECT (i %% 7) * 2 + sin(i * d + %s) FROM generate_series(1, 16) d)::vector,
							(SELECT string_agg(md5(i::text || g::text), '''') FROM generate_series(1, 28) g)
						FROM generate_series(%s, %s) i', p, p, p, p * 2000 + 1, p * 2000 + 2000);
		EXECUTE format('CREATE INDEX ON shared_%s USING ivfpq (e) WITH (lists = 8, m = 8)', p);
	END LOOP;
END $$;
ANALYZE shared;

-- heap and index buffers a query touches, from EXPLAIN (ANALYZE, BUFFERS)
CREATE FUNCTION buffers_touched(query text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	plan json;
BEGIN
	EXECUTE 'EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ' || query INTO plan;
	RETURN (plan -> 0 -> 'Plan' ->> 'Shared Hit Blocks')::bigint + (plan -> 0 -> 'Plan' ->> 'Shared Read Blocks')::bigint;
END $$;

SET enable_seqscan = off;
SET ivfpq.probes = 8;
SET ivfpq.rerank = 200;
SELECT e AS q FROM shared WHERE id = 12345 \gset
EXPLAIN (COSTS OFF) SELECT id FROM shared ORDER BY e <-> :'q' LIMIT 10;

SET ivfpq.share_rerank = off;
SELECT buffers_touched(format('SELECT id FROM shared ORDER BY e <-> %L LIMIT 10', :'q')) AS per_partition \gset
SELECT array_agg(id) AS ids_per_partition FROM (SELECT id FROM shared ORDER BY e <-> :'q' LIMIT 10) s \gset
SET ivfpq.share_rerank = on;
SELECT buffers_touched(format('SELECT id FROM shared ORDER BY e <-> %L LIMIT 10', :'q')) AS shared_rerank \gset
SELECT array_agg(id) AS ids_shared FROM (SELECT id FROM shared ORDER BY e <-> :'q' LIMIT 10) s \gset
-- 10 x 200 candidates fetched from the heap against 10 x 20
SELECT :shared_rerank * 3 < :per_partition AS shared_rerank_reads_less;
-- and the same nearest rows (every list is probed, so both are exact here)
SELECT :'ids_shared' = :'ids_per_partition' AS same_neighbours;
SET enable_indexscan = off;
SET enable_seqscan = on;
SELECT :'ids_shared' = (SELECT array_agg(id)::text FROM (SELECT id FROM shared ORDER BY e <-> :'q' LIMIT 10) s) AS exact_neighbours;
RESET enable_indexscan;

-- a single table is not affected: no MergeAppend above its scan
SET enable_seqscan = off;
SELECT buffers_touched(format('SELECT id FROM shared_3 ORDER BY e <-> %L LIMIT 10', :'q')) AS single_shared \gset
SET ivfpq.share_rerank = off;
SELECT buffers_touched(format('SELECT id FROM shared_3 ORDER BY e <-> %L LIMIT 10', :'q')) AS single_unshared \gset
SELECT :single_shared = :single_unshared AS single_table_unchanged;
RESET ALL;
DROP TABLE shared;
DROP FUNCTION buffers_touched(text);
