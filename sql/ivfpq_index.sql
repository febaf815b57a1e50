-- ivfpq index: build, ordered scans with exact rerank, options, plans,
-- writes after build, VACUUM.  Prints booleans and counts, not floats, so the
-- output does not depend on training details.
SET client_min_messages = notice;
SELECT setseed(0.42);

-- 3000 rows around 30 centres in 16 dimensions, plus a rare category.
CREATE TABLE items (id int PRIMARY KEY, category int, e vector(16));
CREATE TABLE centres AS
	SELECT c, ARRAY(SELECT random() * 4 FROM generate_series(1, 16) WHERE c > 0) AS v
	FROM generate_series(1, 30) c;
INSERT INTO items
	SELECT i, CASE WHEN i % 100 = 0 THEN 3 ELSE 1 END,
		   (SELECT ARRAY(SELECT v[d] + (random() - 0.5) FROM generate_series(1, 16) d)::vector
			  FROM centres WHERE c = 1 + i % 30)
	FROM generate_series(1, 3000) i;
CREATE TABLE queries AS
	SELECT q, (SELECT ARRAY(SELECT v[d] + (random() - 0.5) FROM generate_series(1, 16) d)::vector
				 FROM centres WHERE c = 1 + (q * 7) % 30) AS e
	FROM generate_series(1, 20) q;

-- recall@k of the current plan against exact search, over all queries
CREATE FUNCTION recall_at(k int, op text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
	hits int := 0;
	qrow record;
	approx int[];
	exact int[];
	saved_seqscan text := current_setting('enable_seqscan');
BEGIN
	FOR qrow IN SELECT * FROM queries ORDER BY q LOOP
		EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY e %s $1 LIMIT %s) s', op, k)
			INTO approx USING qrow.e;
		-- exact search is a sequential scan and sort: with index scans and
		-- sequential scans both disabled the planner would pick the index again
		PERFORM set_config('enable_indexscan', 'off', true), set_config('enable_seqscan', 'on', true);
		EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY e %s $1 LIMIT %s) s', op, k)
			INTO exact USING qrow.e;
		PERFORM set_config('enable_indexscan', 'on', true), set_config('enable_seqscan', saved_seqscan, true);
		hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
	END LOOP;
	RETURN hits::float8 / (k * (SELECT count(*) FROM queries));
END $$;

-- true when the index returns rows in non-decreasing exact distance
CREATE FUNCTION ordered(k int, op text) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
	ok bool := true;
	qrow record;
	d float8[];
BEGIN
	FOR qrow IN SELECT * FROM queries ORDER BY q LOOP
		EXECUTE format('SELECT array_agg(dist) FROM (SELECT e %s $1 AS dist FROM items ORDER BY e %s $1 LIMIT %s) s',
					   op, op, k) INTO d USING qrow.e;
		ok := ok AND array_length(d, 1) = k AND
			  NOT EXISTS (SELECT 1 FROM generate_series(2, k) i WHERE d[i] < d[i - 1]);
	END LOOP;
	RETURN ok;
END $$;

SET enable_seqscan = off;

-- every opclass: recall vs exact search
CREATE INDEX items_l2 ON items USING ivfpq (e vector_l2_ops) WITH (lists = 16, m = 8);
SELECT lists, rows, list_min > 0 AS lists_filled, training_rows, dimensions, m, nbits, metric, trained
	FROM ivfpq_index_stats('items_l2');
SET ivfpq.probes = 4;
SELECT recall_at(10, '<->') >= 0.95 AS l2_recall_ok, ordered(10, '<->') AS l2_ordered;
-- the same without the cached per-list distance terms (full tables per list)
SET ivfpq.table_cache_mb = 0;
SELECT recall_at(10, '<->') >= 0.95 AS l2_recall_ok_uncached, ordered(10, '<->') AS l2_ordered_uncached;
RESET ivfpq.table_cache_mb;
DROP INDEX items_l2;

CREATE INDEX items_ip ON items USING ivfpq (e vector_ip_ops) WITH (lists = 16, m = 8);
SELECT metric FROM ivfpq_index_stats('items_ip');
SELECT recall_at(10, '<#>') >= 0.90 AS ip_recall_ok, ordered(10, '<#>') AS ip_ordered;
DROP INDEX items_ip;

CREATE INDEX items_cos ON items USING ivfpq (e vector_cosine_ops) WITH (lists = 16, m = 8);
SELECT metric FROM ivfpq_index_stats('items_cos');
SELECT recall_at(10, '<=>') >= 0.90 AS cosine_recall_ok, ordered(10, '<=>') AS cosine_ordered;
DROP INDEX items_cos;

-- defaults derived from the table: lists = rows / 1000, m with 8-dim sub-vectors
CREATE INDEX items_default ON items USING ivfpq (e);
SELECT lists, m, nbits FROM ivfpq_index_stats('items_default');
DROP INDEX items_default;

CREATE INDEX items_idx ON items USING ivfpq (e) WITH (lists = 16, m = 8);

-- plan choice: the index serves ORDER BY distance (with LIMIT), nothing else
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY e <-> (SELECT e FROM queries WHERE q = 1) LIMIT 5;
CREATE FUNCTION plan_uses_ivfpq(query text) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
	line text;
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
		IF line LIKE '%items_idx%' THEN
			RETURN true;
		END IF;
	END LOOP;
	RETURN false;
END $$;
SELECT plan_uses_ivfpq('SELECT count(*) FROM items') AS count_uses_ivfpq,
	   plan_uses_ivfpq('SELECT id FROM items WHERE e = ''[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]''') AS equality_uses_ivfpq,
	   plan_uses_ivfpq('SELECT id FROM items ORDER BY e <#> ''[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]'' LIMIT 5') AS other_metric_uses_ivfpq,
	   plan_uses_ivfpq('SELECT id FROM items ORDER BY e <-> ''[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]'' LIMIT 5') AS knn_uses_ivfpq;
-- chosen on cost too, not only when sequential scans are disabled
RESET enable_seqscan;
SET ivfpq.probes = 1;
SET ivfpq.rerank = 10;
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY e <-> '[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]' LIMIT 5;
RESET ivfpq.probes;
RESET ivfpq.rerank;
SET enable_seqscan = off;

-- rerank = 0 returns PQ order without heap access; rerank > 0 exact order.
-- On this data PQ distances are close enough to misorder neighbours (recall@10
-- about 0.83 at rerank = 0, 1.0 with the default rerank = 100), so both
-- checks below fail if the rerank is skipped or the PQ order were exact.
SET ivfpq.rerank = 0;
SELECT count(*) FROM (SELECT id FROM items ORDER BY e <-> (SELECT e FROM queries WHERE q = 1) LIMIT 10) s;
SELECT recall_at(10, '<->') AS recall_rerank0 \gset
SELECT ordered(10, '<->') AS exact_order_without_rerank;
RESET ivfpq.rerank;
SELECT recall_at(10, '<->') AS recall_rerank100 \gset
SELECT :recall_rerank0 < :recall_rerank100 - 0.05 AS rerank_helps, :recall_rerank100 >= 0.95 AS reranked_recall_ok;
SELECT ordered(10, '<->') AS exact_order_with_rerank;

-- iterative scan: a selective filter still gets its 10 rows (30 exist)
SET ivfpq.probes = 1;
SET ivfpq.rerank = 20;
SELECT count(*) AS filtered_rows FROM (
	SELECT id FROM items WHERE category = 3
	ORDER BY e <-> (SELECT e FROM queries WHERE q = 1) LIMIT 10) s;
SELECT count(*) AS all_rows_reachable FROM (SELECT id FROM items ORDER BY e <-> (SELECT e FROM queries WHERE q = 2)) s;
SET ivfpq.max_probes = 2;
SELECT count(*) < 3000 AS bounded_by_max_probes FROM (SELECT id FROM items ORDER BY e <-> (SELECT e FROM queries WHERE q = 2)) s;
RESET ivfpq.max_probes;
RESET ivfpq.probes;
RESET ivfpq.rerank;

-- prepared statement, LATERAL join (rescans), EXPLAIN ANALYZE
PREPARE knn(vector) AS SELECT id FROM items ORDER BY e <-> $1 LIMIT 1;
SELECT e AS item_1234 FROM items WHERE id = 1234 \gset
SELECT e AS item_777 FROM items WHERE id = 777 \gset
EXECUTE knn(:'item_1234');
EXECUTE knn(:'item_777');
EXECUTE knn(:'item_1234');
SELECT count(*) AS self_matches FROM (SELECT * FROM items WHERE id % 100 = 7) probe,
	LATERAL (SELECT id FROM items ORDER BY items.e <-> probe.e LIMIT 1) n WHERE n.id = probe.id;
SELECT count(*) AS lateral_rows FROM queries, LATERAL (SELECT id FROM items ORDER BY items.e <-> queries.e LIMIT 4) n;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
	SELECT id FROM items ORDER BY e <-> '[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]' LIMIT 5;

-- query errors
SELECT id FROM items ORDER BY e <-> '[1,2,3]' LIMIT 1;
SELECT count(*) FROM (SELECT id FROM items ORDER BY e <-> NULL LIMIT 3) s;

-- a row inserted after the build is found by the next query
INSERT INTO items VALUES (100001, 1, '[9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9]');
SELECT id FROM items ORDER BY e <-> '[9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9]' LIMIT 1;
-- ... and after many inserts (list pages fill and new pages are linked)
INSERT INTO items SELECT 200000 + id, 1, e + '[0.01,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0.01]'
	FROM items WHERE id <= 500;
SELECT id FROM items ORDER BY e <-> (SELECT e FROM items WHERE id = 200250) LIMIT 1;
SELECT id FROM items ORDER BY e <-> (SELECT e FROM items WHERE id = 200499) LIMIT 1;
SELECT rows FROM ivfpq_index_stats('items_idx');

-- delete + VACUUM + reinsert: VACUUM removes the index entries of dead rows,
-- and new rows that reuse the heap slots (TIDs) of deleted rows are found by
-- their new vectors, never through a stale entry holding the old vector.
CREATE TABLE deleted_rows AS SELECT ctid AS tid, id, e FROM items WHERE id > 200000 OR id % 2 = 0;
DELETE FROM items WHERE id > 200000 OR id % 2 = 0;
VACUUM items;
SELECT rows = (SELECT count(*) FROM items) AS vacuum_removed_dead FROM ivfpq_index_stats('items_idx');
-- new points of the same clusters, so they mostly land in other lists than the
-- deleted row whose slot they take
INSERT INTO items
	SELECT 300000 + i, 1,
		   (SELECT ARRAY(SELECT v[d] + (random() - 0.5) FROM generate_series(1, 16) d)::vector
			  FROM centres WHERE c = 1 + (i * 7) % 30)
	FROM generate_series(1, 1500) i;
CREATE TABLE reused_slots AS
	SELECT i.id, i.e, d.e AS old_e FROM items i JOIN deleted_rows d ON i.ctid = d.tid WHERE i.id >= 300000;
SELECT count(*) >= 1000 AS slots_reused FROM reused_slots;
SELECT rows = (SELECT count(*) FROM items) AS rows_after_reinsert FROM ivfpq_index_stats('items_idx');
-- each such row is the nearest neighbour of its own new vector, probing only
-- the list its new vector belongs to
SET ivfpq.probes = 1;
SELECT count(*) = (SELECT count(*) FROM reused_slots) AS reused_slots_found_by_new_vector
	FROM reused_slots r WHERE (SELECT id FROM items ORDER BY e <-> r.e LIMIT 1) = r.id;
-- in PQ order (rows straight from index entries) each is among the 10 nearest
-- of its new vector, and a query at the old vector never returns the row now
-- in that slot unless its new vector is close too
SET ivfpq.rerank = 0;
SELECT count(*) FILTER (WHERE r.id IN (SELECT id FROM items ORDER BY e <-> r.e LIMIT 10)) = count(*)
		AS found_in_pq_order,
	   count(*) FILTER (WHERE r.e <-> r.old_e > 2
						  AND r.id IN (SELECT id FROM items ORDER BY e <-> r.old_e LIMIT 10))
		AS stale_entries_returned
	FROM reused_slots r;
-- a full scan in PQ order returns every live row exactly once
SET ivfpq.probes = 16;
SELECT count(DISTINCT id) = count(*) AND count(*) = (SELECT count(*) FROM items) AS every_live_row_once
	FROM (SELECT id FROM items ORDER BY e <-> (SELECT e FROM queries WHERE q = 3)) s;
RESET ivfpq.rerank;
RESET ivfpq.probes;
DROP TABLE deleted_rows, reused_slots;

-- NULLs are not indexed (and never returned by the index)
INSERT INTO items VALUES (400000, 1, NULL);
SELECT count(*) = (SELECT count(*) FROM items WHERE e IS NOT NULL) AS nulls_skipped
	FROM (SELECT id FROM items ORDER BY e <-> (SELECT e FROM queries WHERE q = 3)) s;

-- options validation
CREATE INDEX ON items USING ivfpq (e) WITH (m = 5);
CREATE INDEX ON items USING ivfpq (e) WITH (m = 32);
CREATE INDEX ON items USING ivfpq (e) WITH (nbits = 5);
CREATE INDEX ON items USING ivfpq (e) WITH (nbits = 4, m = 1);
CREATE INDEX ON items USING ivfpq (e) WITH (lists = -1);
CREATE INDEX ON items USING ivfpq (e) WITH (lists = 70000);
CREATE INDEX ON items USING ivfpq (e) WITH (probes = 3);
CREATE INDEX ON items USING ivfpq ((e + e));
CREATE INDEX ON items USING ivfpq (e, e);
CREATE INDEX ON items USING ivfpq (category);
SET maintenance_work_mem = '1MB';
CREATE INDEX ON items USING ivfpq (e) WITH (lists = 20000);
RESET maintenance_work_mem;
SET ivfpq.probes = 0;
SET ivfpq.nonsense = 1;

-- dimensions: an untyped column learns them from the data
CREATE TABLE loose (id int, e vector);
INSERT INTO loose VALUES (1, '[1,2,3]'), (2, '[3,2,1]'), (3, '[1,1,1]');
CREATE INDEX loose_idx ON loose USING ivfpq (e) WITH (lists = 1, m = 3);
INSERT INTO loose VALUES (4, '[1,2,3,4]');
SELECT id FROM loose ORDER BY e <-> '[1,1,1]' LIMIT 1;
INSERT INTO loose VALUES (5, '[1,2]'), (6, '[1,2,3,4]');
DROP TABLE loose;

-- an empty table gets a working (untrained) index; rows are found as they arrive
CREATE TABLE empty_items (id int, e vector(3));
CREATE INDEX empty_idx ON empty_items USING ivfpq (e);
SELECT lists, rows, trained FROM ivfpq_index_stats('empty_idx');
INSERT INTO empty_items SELECT i, ARRAY[i, i, i]::vector FROM generate_series(1, 50) i;
SELECT id FROM empty_items ORDER BY e <-> '[10.2,10.2,10.2]' LIMIT 3;
-- a tiny table trains with a notice and works
CREATE TABLE tiny (id int, e vector(4));
INSERT INTO tiny VALUES (1, '[1,0,0,0]'), (2, '[0,1,0,0]'), (3, '[0,0,1,0]');
CREATE INDEX tiny_idx ON tiny USING ivfpq (e) WITH (lists = 10, m = 2);
SELECT id FROM tiny ORDER BY e <-> '[0,0.9,0.1,0]' LIMIT 3;
-- cosine skips zero vectors
CREATE INDEX tiny_cos ON tiny USING ivfpq (e vector_cosine_ops) WITH (lists = 1, m = 2);
INSERT INTO tiny VALUES (4, '[0,0,0,0]');
DROP TABLE tiny, empty_items;

-- 16000 dimensions: the index stores codes, so it is not capped at 2000
CREATE TABLE wide (id int, e vector(16000)) WITH (toast_tuple_target = 8160);
ALTER TABLE wide ALTER COLUMN e SET STORAGE external;
INSERT INTO wide SELECT i, ARRAY(SELECT CASE WHEN d = 1 THEN i ELSE (i * 7 + d) % 13 END FROM generate_series(1, 16000) d)::vector
	FROM generate_series(1, 300) i;
CREATE INDEX wide_idx ON wide USING ivfpq (e) WITH (lists = 4, m = 1000);
SELECT dimensions, m, rows FROM ivfpq_index_stats('wide_idx');
SELECT id FROM wide ORDER BY e <-> (SELECT e FROM wide WHERE id = 42) LIMIT 1;
DROP TABLE wide;

-- compressible vectors: the build says the rerank will decompress them
CREATE TABLE sparse_items (id int, e vector(600));
INSERT INTO sparse_items SELECT i, ('[' || i || repeat(',0', 599) || ']')::vector FROM generate_series(1, 300) i;
CREATE INDEX ON sparse_items USING ivfpq (e) WITH (lists = 2, m = 60);
SELECT id FROM sparse_items ORDER BY e <-> ('[7' || repeat(',0', 599) || ']')::vector LIMIT 1;
TRUNCATE sparse_items;
ALTER TABLE sparse_items SET (toast_tuple_target = 8160);
INSERT INTO sparse_items SELECT i, ('[' || i || repeat(',0', 599) || ']')::vector FROM generate_series(1, 300) i;
REINDEX TABLE sparse_items;
SELECT id FROM sparse_items ORDER BY e <-> ('[7' || repeat(',0', 599) || ']')::vector LIMIT 1;
DROP TABLE sparse_items;

-- unlogged tables have an init fork
CREATE UNLOGGED TABLE unlogged_items (id int, e vector(3));
CREATE INDEX ON unlogged_items USING ivfpq (e);
INSERT INTO unlogged_items VALUES (1, '[1,2,3]');
SELECT id FROM unlogged_items ORDER BY e <-> '[1,2,3]' LIMIT 1;
DROP TABLE unlogged_items;

-- ivfpq_index_stats rejects other relations
SELECT * FROM ivfpq_index_stats('items_pkey');

DROP TABLE items, queries, centres;
DROP FUNCTION recall_at(int, text), ordered(int, text), plan_uses_ivfpq(text);
