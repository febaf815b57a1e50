-- A query over 100 partitions, each with its own ivfpq index: one index scan
-- per partition under a MergeAppend, every one of them with a quantizer in
-- the backend's cache at once (no fixed limit on indexes per query), also
-- when ivfpq.cache_mb is far too small to hold them (entries in use are kept).
CREATE TABLE hundred (id int, day int, e vector(8)) PARTITION BY RANGE (day);
DO $$
BEGIN
	FOR p IN 0..99 LOOP
		EXECUTE format('CREATE TABLE hundred_%s PARTITION OF hundred FOR VALUES FROM (%s) TO (%s)', p, p, p + 1);
		EXECUTE format('INSERT INTO hundred_%s SELECT i, %s, ARRAY(SELECT sin(i * d + %s) FROM generate_series(1, 8) d)::vector
						FROM generate_series(%s, %s) i', p, p, p, p * 100 + 1, p * 100 + 100);
		EXECUTE format('CREATE INDEX ON hundred_%s USING ivfpq (e) WITH (lists = 2, m = 4)', p);
	END LOOP;
END $$;
ANALYZE hundred;

-- index scans under the MergeAppend of one query
CREATE FUNCTION ivfpq_scans(query text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	line text;
	scans bigint := 0;
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
		IF line ~ 'Index Scan using hundred_\d+_e_idx' THEN
			scans := scans + 1;
		END IF;
	END LOOP;
	RETURN scans;
END $$;

SET enable_seqscan = off;
SET ivfpq.probes = 2;
SET ivfpq.rerank = 1000;
SELECT ivfpq_scans('SELECT id FROM hundred ORDER BY e <-> ''[0.5,0.1,-0.3,0.9,0,0.2,0.4,-0.8]'' LIMIT 10') AS index_scans;
SELECT array_agg(id) AS by_index FROM (SELECT id FROM hundred ORDER BY e <-> '[0.5,0.1,-0.3,0.9,0,0.2,0.4,-0.8]' LIMIT 10) s \gset
SET ivfpq.cache_mb = 1;
SELECT array_agg(id) = :'by_index' AS same_with_small_cache
	FROM (SELECT id FROM hundred ORDER BY e <-> '[0.5,0.1,-0.3,0.9,0,0.2,0.4,-0.8]' LIMIT 10) s;
RESET ivfpq.cache_mb;
SET enable_indexscan = off;
SET enable_seqscan = on;
SELECT array_agg(id) = :'by_index' AS same_as_exact
	FROM (SELECT id FROM hundred ORDER BY e <-> '[0.5,0.1,-0.3,0.9,0,0.2,0.4,-0.8]' LIMIT 10) s;
RESET ALL;
-- a time predicate prunes partitions
SET enable_seqscan = off;
SELECT ivfpq_scans('SELECT id FROM hundred WHERE day BETWEEN 10 AND 12 ORDER BY e <-> ''[0.5,0.1,-0.3,0.9,0,0.2,0.4,-0.8]'' LIMIT 10') AS pruned_scans;
RESET enable_seqscan;
DROP TABLE hundred;
DROP FUNCTION ivfpq_scans(text);
